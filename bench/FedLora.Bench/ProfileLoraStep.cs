using System.Diagnostics;
using System.Globalization;

namespace FedLora.Bench;

/// <summary>
/// `--profile-lora-step [L4-C128|L6-C256]`: where one LoRA fine-tuning step of <see cref="LoraStepBenchmarks"/>
/// spends its time, op by op (wall time summed over a few steps on the Cpu backend, matmul-family ops
/// per C x O shape), largest first, with each op's share of the step.
/// </summary>
internal static class ProfileLoraStep
{
    private const int Warmup = 3, Steps = 5;

    public static int Run(string[] args)
    {
        var config = args.Length > 0 ? args[0] : "L6-C256";
        var backend = new ProfilingBackend();
        var bench = new LoraStepBenchmarks { Config = config, CreateBackend = () => backend };
        bench.Setup();
        try
        {
            for (var i = 0; i < Warmup; i++) bench.Step();
            backend.Reset();
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < Steps; i++) bench.Step();
            var step = watch.Elapsed.TotalSeconds / Steps;
            Console.WriteLine($"load: {File.ReadAllText("/proc/loadavg").Trim()}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{config}: {step * 1e3:0.0} ms per step, {backend.Description}"));
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
