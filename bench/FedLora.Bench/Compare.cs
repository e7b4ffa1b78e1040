using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace FedLora.Bench;

/// <summary>
/// `--compare`: FedLora's Cpu GEMMs against OpenBLAS (numpy, bench/peers/gemm_numpy.py) on the same
/// shapes in the same run, alternated shape by shape and round by round so that both sides see the
/// same machine load; then LoRA forward's GFLOP/s (counting its extra FLOPs) as a percentage of the
/// plain forward's. Each side times its calls in turn, call by call, and reports each op's best call
/// (at least 5, for at least 0.3 s per op) over the rounds.
/// </summary>
internal static class Compare
{
    public static int Run(string[] args)
    {
        var n = Option(args, "--n", 2048);
        var channels = Options(args, "--c", [128, 256, 512]);
        var multipliers = Options(args, "--o-times-c", [1, 3, 4]);
        var ranks = Options(args, "--r", [4, 16, 64]);
        var rounds = Option(args, "--rounds", 2);
        var python = Environment.GetEnvironmentVariable("FEDLORA_PYTHON") ?? "/usr/bin/python3";
        var script = FindPeerScript();

        using var peer = StartPeer(python, script);
        var info = peer.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the numpy peer printed nothing");
        Console.WriteLine($"peer: {info}");
        Console.WriteLine($"FedLora: {new FedLora.Kernels.Cpu.CpuBackend().Description}");
        Console.WriteLine();

        var table = new List<string[]>();
        var lora = new List<string[]>();
        string[] ops = ["forward", "dinput", "dweight"];
        foreach (var c in channels)
        {
            foreach (var times in multipliers)
            {
                var o = times * c;
                using var problem = new GemmProblem(n, c, o);
                problem.CheckMatmul();
                var adapted = ranks.Select(r => new GemmProblem(n, c, o, r)).ToArray();
                foreach (var a in adapted) a.CheckLora();
                var ours = new double[3];
                var theirs = new double[3];
                var withLora = new double[ranks.Length];
                // Alternate the sides round by round and keep each side's best: a burst of load from
                // other processes then rarely lands on one side only.
                for (var round = 0; round < rounds; round++)
                {
                    peer.StandardInput.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{n} {c} {o}"));
                    using (var reply = JsonDocument.Parse(peer.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the numpy peer stopped")))
                    {
                        for (var i = 0; i < 3; i++) theirs[i] = Math.Max(theirs[i], reply.RootElement.GetProperty(ops[i]).GetDouble());
                    }
                    Action[] calls = [problem.Forward, problem.BackwardInput, problem.BackwardWeight, .. adapted.Select(a => (Action)a.LoraForward)];
                    var seconds = BestSeconds(calls);
                    for (var i = 0; i < 3; i++) ours[i] = Math.Max(ours[i], problem.Flops.GemmFlops / seconds[i] / 1e9);
                    for (var r = 0; r < ranks.Length; r++)
                    {
                        withLora[r] = Math.Max(withLora[r], adapted[r].Flops.LoraForwardFlops / seconds[3 + r] / 1e9);
                    }
                }
                foreach (var a in adapted) a.Dispose();
                string[] names = ["forward (x W^T)", "dinput (dy W)", "dweight (dy^T x)"];
                for (var i = 0; i < 3; i++)
                {
                    table.Add([$"{n}x{c}x{o}", names[i], F(ours[i]), F(theirs[i]), F(ours[i] / theirs[i], "0.00") + "x"]);
                    Console.WriteLine(string.Join("  ", table[^1]));
                }
                for (var r = 0; r < ranks.Length; r++)
                {
                    lora.Add([$"{n}x{c}x{o}", ranks[r].ToString(CultureInfo.InvariantCulture), F(withLora[r]), F(ours[0]), F(100 * withLora[r] / ours[0], "0") + "%"]);
                }
            }
        }
        peer.StandardInput.Close();
        peer.WaitForExit();

        Console.WriteLine();
        Print(["shape NxCxO", "GEMM", "FedLora GFLOP/s", "OpenBLAS GFLOP/s", "ratio"], table);
        Console.WriteLine();
        Console.WriteLine("LoRA forward, GFLOP/s counting 2NCO + 2NCr + 2NrO, against the plain forward of the same run:");
        Print(["shape NxCxO", "r", "LoRA fwd GFLOP/s", "plain fwd GFLOP/s", "LoRA/plain"], lora);
        return 0;
    }

    /// <summary>
    /// Best wall time of one call of each action, after a warm-up, calling them in turn (so that a
    /// burst of load from other processes hits all of them alike) at least 5 times each and for at
    /// least 0.3 s per action.
    /// </summary>
    public static double[] BestSeconds(Action[] actions)
    {
        foreach (var action in actions) action();
        var best = Enumerable.Repeat(double.MaxValue, actions.Length).ToArray();
        var total = Stopwatch.StartNew();
        for (var runs = 0; runs < 5 || total.Elapsed.TotalSeconds < 0.3 * actions.Length; runs++)
        {
            for (var i = 0; i < actions.Length; i++)
            {
                var start = Stopwatch.GetTimestamp();
                actions[i]();
                best[i] = Math.Min(best[i], Stopwatch.GetElapsedTime(start).TotalSeconds);
            }
        }
        return best;
    }

    private static Process StartPeer(string python, string script)
    {
        var start = new ProcessStartInfo(python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(script);
        start.ArgumentList.Add("--serve");
        // Either variable makes OpenBLAS pick a slower kernel than this CPU's: the peer runs without them.
        start.Environment.Remove("OPENBLAS_CORETYPE");
        start.Environment.Remove("OPENBLAS_L2_SIZE");
        return Process.Start(start) ?? throw new InvalidOperationException($"could not start {python} {script}");
    }

    private static string FindPeerScript() => FindRepositoryFile(Path.Combine("bench", "peers", "gemm_numpy.py"));

    /// <summary>A file of the repository, found from the benchmark binary upward.</summary>
    internal static string FindRepositoryFile(string relativePath)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, relativePath);
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException($"{relativePath} not found above {AppContext.BaseDirectory}");
    }

    /// <summary>Prints a Markdown table, numbers right-aligned.</summary>
    internal static void Print(string[] header, List<string[]> rows)
    {
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        Console.WriteLine("| " + string.Join(" | ", header.Select((h, i) => h.PadRight(widths[i]))) + " |");
        Console.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
        foreach (var row in rows) Console.WriteLine("| " + string.Join(" | ", row.Select((v, i) => i == 0 ? v.PadRight(widths[i]) : v.PadLeft(widths[i]))) + " |");
    }

    private static string F(double value, string format = "0.0") => value.ToString(format, CultureInfo.InvariantCulture);

    internal static int Option(string[] args, string name, int fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }

    internal static string? OptionText(string[] args, string name)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    private static int[] Options(string[] args, string name, int[] fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length
            ? args[i + 1].Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray()
            : fallback;
    }
}
