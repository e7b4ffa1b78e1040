using System.Globalization;

namespace FedLora.Bench;

/// <summary>
/// `--profile-lora-step [L4-C128|L6-C256|GPT2-124M] [--cpu-time]`: where one LoRA fine-tuning step of
/// <see cref="LoraStepBenchmarks"/> spends its time, op by op (wall time summed over a few steps on the
/// Cpu backend, matmul-family ops per C x O shape), largest first, with each op's share of the step.
/// `--cpu-time` times the process's CPU time instead: run with DOTNET_PROCESSOR_COUNT=1, it gives each
/// op's cost on one core even on a machine that other processes keep busy.
/// </summary>
internal static class ProfileLoraStep
{
    private const int Warmup = 3, Steps = 5;

    public static int Run(string[] args)
    {
        var config = args.FirstOrDefault(arg => !arg.StartsWith("--", StringComparison.Ordinal)) ?? "L6-C256";
        if (!LoraStepBenchmarks.Configs.Contains(config)) throw new ArgumentException($"unknown config '{config}'; choose among {string.Join(", ", LoraStepBenchmarks.Configs)}");
        var cpuTime = args.Contains("--cpu-time");
        var backend = new ProfilingBackend(cpuTime);
        var bench = new LoraStepBenchmarks { Config = config, CreateBackend = () => backend };
        bench.Setup();
        try
        {
            for (var i = 0; i < Warmup; i++) bench.Step();
            backend.Reset();
            var start = backend.Now();
            for (var i = 0; i < Steps; i++) bench.Step();
            var step = (backend.Now() - start) / backend.Frequency / Steps;
            Console.WriteLine($"load: {File.ReadAllText("/proc/loadavg").Trim()}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{config}: {step * 1e3:0.0} ms{(cpuTime ? " of CPU time" : "")} per step, {backend.Description}"));
            Console.WriteLine();
            var rows = backend.Ops.OrderByDescending(op => op.Seconds).Select(op => new[]
            {
                op.Op,
                (op.Calls / Steps).ToString(CultureInfo.InvariantCulture),
                (op.Seconds / Steps * 1e3).ToString("0.00", CultureInfo.InvariantCulture),
                (100 * op.Seconds / Steps / step).ToString("0.0", CultureInfo.InvariantCulture) + "%",
            }).ToList();
            var timed = backend.Ops.Sum(op => op.Seconds) / Steps;
            rows.Add(["(outside the ops)", "", ((step - timed) * 1e3).ToString("0.00", CultureInfo.InvariantCulture),
                (100 * (step - timed) / step).ToString("0.0", CultureInfo.InvariantCulture) + "%"]);
            Compare.Print(["op", "calls/step", "ms/step", "share"], rows);
            return 0;
        }
        finally
        {
            bench.Dispose();
        }
    }
}
