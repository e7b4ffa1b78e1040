using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace FedLora.Bench;

/// <summary>
/// The default job is short (in process, 2 warm-ups, 5 iterations of about 0.2 s) so that the whole
/// GEMM sweep runs in a few minutes on a shared 2-core machine; pass --job to BenchmarkDotNet for longer runs.
/// </summary>
internal static class BenchConfig
{
    public static IConfig Create() => DefaultConfig.Instance
        .AddJob(Job.Default
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithLaunchCount(1)
            .WithWarmupCount(2)
            .WithIterationCount(5)
            .WithIterationTime(Perfolizer.Horology.TimeInterval.FromMilliseconds(200))
            .WithId("Short"))
        .AddColumn(StatisticColumn.Median, new GflopsColumn());
}

/// <summary>A benchmark that knows the floating-point operations of one invocation of each of its methods.</summary>
public interface IFlopCount
{
    double Flops(string method);
}

/// <summary>
/// GFLOP/s = FLOPs of one invocation / median time, for benchmarks that implement <see cref="IFlopCount"/>.
/// The median, not the mean: on a machine shared with other work, a few slow iterations would
/// otherwise set the figure.
/// </summary>
internal sealed class GflopsColumn : IColumn
{
    public string Id => nameof(GflopsColumn);
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Billions of floating-point operations per second (2 per multiply-add), from the median time";

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) => true;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var median = summary[benchmarkCase]?.ResultStatistics?.Median;
        if (median is not > 0) return "-";
        if (Activator.CreateInstance(benchmarkCase.Descriptor.Type) is not IFlopCount counter) return "-";
        foreach (var parameter in benchmarkCase.Parameters.Items)
        {
            benchmarkCase.Descriptor.Type.GetProperty(parameter.Name)?.SetValue(counter, parameter.Value);
        }
        var flops = counter.Flops(benchmarkCase.Descriptor.WorkloadMethod.Name);
        if (double.IsNaN(flops)) return "-";
        return (flops / median.Value).ToString("0.0", CultureInfo.InvariantCulture);
    }

    public override string ToString() => ColumnName;
}
