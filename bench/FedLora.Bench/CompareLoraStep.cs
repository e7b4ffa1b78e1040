using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Model;
using FedLora.Model.Training;

namespace FedLora.Bench;

/// <summary>
/// `--compare-lora-step`: one LoRA fine-tuning step (forward, backward, AdamW on the adapters, base
/// frozen) of FedLora's GPT against the same model in PyTorch (bench/peers/lora_step_torch.py, the
/// better of 1 and 2 threads), at the configurations of <see cref="LoraStepBenchmarks"/> (`--configs`,
/// default L4-C128,L6-C256; GPT2-124M is GPT-2's shapes, V = 50,257, where the peak memory of each
/// side's process is printed too, FedLora's read after its LoRA steps and before it sizes full
/// fine-tuning); tokens/s
/// = B*T / median step time, each side's best of a few rounds that alternate the sides
/// (`--rounds N`, 6 by default: with 3, a fast spell of the machine that fell on one side only moved
/// the L6-C256 ratio between 2.86x and 3.55x in five runs; with 6, two runs gave 3.16x and 3.24x),
/// and their ratio; then the ceiling on the tokens/s of a step built on the peer's BLAS: its best matmul
/// rate over <see cref="MinimumFlopsPerToken"/>. Also the bytes each run holds on the backend for LoRA
/// fine-tuning against full fine-tuning of the same model.
/// </summary>
internal static class CompareLoraStep
{
    private const int Warmup = 3, Steps = 7;

    public static int Run(string[] args)
    {
        var rounds = Compare.Option(args, "--rounds", 6);
        var python = Environment.GetEnvironmentVariable("FEDLORA_PYTHON") ?? "/usr/bin/python3";
        var script = Compare.FindRepositoryFile(Path.Combine("bench", "peers", "lora_step_torch.py"));
        var configs = (Compare.OptionText(args, "--configs") ?? "L4-C128,L6-C256").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var name in configs)
        {
            if (!LoraStepBenchmarks.Configs.Contains(name)) throw new ArgumentException($"--configs: unknown config '{name}'; choose among {string.Join(", ", LoraStepBenchmarks.Configs)}");
        }
        Console.WriteLine($"load: {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine($"FedLora: {new CpuBackend().Description}");
        Console.WriteLine();
        // The sides alternate round by round and each keeps its best round: the machine's speed drifts
        // over tens of seconds, and a slow spell then rarely lands on one side only.
        var ours = configs.ToDictionary(name => name, _ => 0.0);
        var theirs = configs.ToDictionary(name => name, _ => (TokensPerSecond: 0.0, Threads: 0, PeakBytes: 0L));
        var sgemm = configs.ToDictionary(name => name, _ => 0.0);
        var loraBytes = new Dictionary<string, long>();
        for (var round = 0; round < rounds; round++)
        {
            foreach (var (name, (peer, gflops)) in RunPeer(python, script, configs))
            {
                if (peer.TokensPerSecond > theirs[name].TokensPerSecond) theirs[name] = peer;
                sgemm[name] = Math.Max(sgemm[name], gflops);
            }
            foreach (var name in configs)
            {
                var (tokensPerSecond, allocated) = Measure(name);
                ours[name] = Math.Max(ours[name], tokensPerSecond);
                loraBytes[name] = allocated;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"round {round + 1}: {name} FedLora {tokensPerSecond:0} tok/s, PyTorch best so far {theirs[name].TokensPerSecond:0} tok/s"));
            }
        }
        Console.WriteLine($"load: {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine();
        // The process's peak so far is the LoRA steps' (with the runtime's own): read it before sizing
        // full fine-tuning, whose model, gradients and moments would otherwise set the peak.
        var loraPeak = PeakResidentBytes();
        var fullBytes = configs.ToDictionary(name => name, FullFineTuningBytes);
        var rows = configs.Select(name => new[]
        {
            name, ours[name].ToString("0", CultureInfo.InvariantCulture),
            $"{theirs[name].TokensPerSecond.ToString("0", CultureInfo.InvariantCulture)} ({theirs[name].Threads})",
            (ours[name] / theirs[name].TokensPerSecond).ToString("0.00", CultureInfo.InvariantCulture) + "x",
            (loraBytes[name] / 1e6).ToString("0.0", CultureInfo.InvariantCulture), (fullBytes[name] / 1e6).ToString("0.0", CultureInfo.InvariantCulture),
        }).ToList();
        Compare.Print(["config", "FedLora tok/s", "PyTorch tok/s (threads)", "ratio", "LoRA MB", "full FT MB"], rows);
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"peak resident memory of the LoRA steps: FedLora process {loraPeak / 1e6:0} MB (read before sizing full fine-tuning); PyTorch peer process {theirs.Values.Max(t => t.PeakBytes) / 1e6:0} MB (its largest config)"));
        foreach (var name in configs)
        {
            // What the machine allows: the step's unavoidable arithmetic at the best matmul rate the
            // peer's BLAS reaches on the step's own shapes bounds the tokens/s of a step built on that BLAS.
            var flops = MinimumFlopsPerToken(LoraStepBenchmarks.ModelConfig(name), LoraStepBenchmarks.Time);
            var ceiling = sgemm[name] * 1e9 / flops;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{name} ceiling: at least {flops / 1e6:0.0} MFLOP a token; at the best matmul rate PyTorch's BLAS reaches on the step's shapes, {sgemm[name]:0.0} GFLOP/s, "
                + $"the step runs at most {ceiling:0} tok/s = {ceiling / theirs[name].TokensPerSecond:0.00}x PyTorch's step. FedLora sustains {ours[name] * flops / 1e9:0.0} GFLOP/s ({ours[name] / ceiling:P0} of that rate)"));
        }
        Console.WriteLine($"tok/s: B*T / the median step of a round, best of {rounds} rounds per side");
        Console.WriteLine("MB: bytes FedLora holds on the backend (weights, activations, gradient scratch, trainable gradients and AdamW moments)");
        return 0;
    }

    private static (double TokensPerSecond, long LoraBytes) Measure(string name)
    {
        var bench = new LoraStepBenchmarks { Config = name };
        bench.Setup();
        try
        {
            for (var i = 0; i < Warmup; i++) bench.Step();
            var times = new double[Steps];
            for (var i = 0; i < Steps; i++)
            {
                var watch = Stopwatch.StartNew();
                bench.Step();
                times[i] = watch.Elapsed.TotalSeconds;
            }
            Array.Sort(times);
            var tokensPerSecond = LoraStepBenchmarks.BatchOf(name) * LoraStepBenchmarks.Time / times[Steps / 2];
            return (tokensPerSecond, bench.AllocatedBytes);
        }
        finally
        {
            bench.Dispose();
        }
    }

    /// <summary>The same model trained in full: base gradients and AdamW moments for every weight, no adapters.</summary>
    private static long FullFineTuningBytes(string name)
    {
        using var backend = new CpuBackend();
        using var model = new Gpt(backend, LoraStepBenchmarks.ModelConfig(name), LoraStepBenchmarks.BatchOf(name), LoraStepBenchmarks.Time) { TrainBase = true };
        model.ZeroGradients();
        using var optimizer = new AdamWOptimizer(backend, model.Parameters.Length, new AdamWSettings(LearningRate: 1e-3f));
        return model.AllocatedBytes + optimizer.AllocatedBytes;
    }

    /// <summary>
    /// A lower bound on the floating-point operations of one LoRA step per token (T tokens a sequence): the
    /// dense products forward (per layer C x 3C, C x C, C x 4C, 4C x C; the head C x V), their input
    /// gradients backward (all but the first layer's QKV, below which nothing trains), and causal attention
    /// ((T + 1) / 2 keys a query on average; two products forward, four backward). LoRA's low-rank products,
    /// the elementwise ops and the optimizer are left out, so the bound errs low.
    /// </summary>
    internal static double MinimumFlopsPerToken(GptConfig config, int time)
    {
        double c = config.Channels, layers = config.Layers;
        var dense = layers * 12 * c * c + c * config.VocabSize;
        var attention = layers * 6 * (time + 1.0) * c;
        return 2 * dense + 2 * (dense - 3 * c * c) + attention;
    }

    /// <summary>VmHWM of this process: the most resident memory it has held.</summary>
    private static long PeakResidentBytes()
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return line is null ? 0 : 1024L * long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }

    /// <summary>The peer's best step per config, and its best matmul rate (GFLOP/s) on the step's shapes.</summary>
    private static Dictionary<string, ((double TokensPerSecond, int Threads, long PeakBytes) Step, double SgemmGflops)> RunPeer(string python, string script, string[] configs)
    {
        var start = new ProcessStartInfo(python, [script, "--configs", string.Join(',', configs)]) { RedirectStandardOutput = true, UseShellExecute = false };
        start.Environment.Remove("OPENBLAS_CORETYPE");
        start.Environment.Remove("OPENBLAS_L2_SIZE");
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {python}");
        var best = new Dictionary<string, ((double, int, long), double)>();
        while (process.StandardOutput.ReadLine() is { } line)
        {
            using var json = JsonDocument.Parse(line);
            var root = json.RootElement;
            if (!root.TryGetProperty("best", out _)) continue;
            best[root.GetProperty("config").GetString()!] = ((root.GetProperty("tokens_per_s").GetDouble(), root.GetProperty("threads").GetInt32(),
                root.GetProperty("peak_rss_bytes").GetInt64()), root.GetProperty("sgemm_gflops").GetDouble());
        }
        process.WaitForExit();
        if (process.ExitCode != 0 || best.Count == 0) throw new InvalidOperationException($"the PyTorch peer failed (exit {process.ExitCode})");
        return best;
    }
}
