using System.Diagnostics;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;

namespace FedLora.Bench;

/// <summary>
/// The Cpu backend with a clock around every op: wall time per op (matmul-family ops per C x O
/// shape), or with <see cref="CpuTime"/> the process's CPU time, summed over calls, for
/// `--profile-lora-step`. Allocation and transfers are not timed.
/// </summary>
internal sealed partial class ProfilingBackend(bool cpuTime = false) : CpuBackend
{
    private readonly Dictionary<string, (long Ticks, int Calls)> _ops = [];

    /// <summary>
    /// Whether the clock is the process's CPU time (CLOCK_PROCESS_CPUTIME_ID, in ns) rather than wall time:
    /// with one thread (DOTNET_PROCESSOR_COUNT=1) on a shared machine, what each op costs a core
    /// whatever the other processes do. With more threads it counts every thread's time, spinning included.
    /// </summary>
    public bool CpuTime { get; } = cpuTime;

    /// <summary>The clock's ticks per second.</summary>
    public double Frequency => CpuTime ? 1e9 : Stopwatch.Frequency;

    /// <summary>The clock now.</summary>
    public long Now()
    {
        if (!CpuTime) return Stopwatch.GetTimestamp();
        if (ClockGetTime(2, out var now) != 0) throw new InvalidOperationException("clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
        return now.Seconds * 1_000_000_000 + now.Nanoseconds;
    }

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec time);

    /// <summary>Each op's summed time in seconds and call count, since construction or <see cref="Reset"/>.</summary>
    public IEnumerable<(string Op, double Seconds, int Calls)> Ops =>
        _ops.Select(entry => (entry.Key, entry.Value.Ticks / Frequency, entry.Value.Calls));

    public void Reset() => _ops.Clear();

    /// <summary>Times an op until disposed: <c>using var timer = Time("Op");</c> around the base call.</summary>
    private OpTimer Time(string op) => new(this, op, Now());

    private readonly struct OpTimer(ProfilingBackend owner, string op, long start) : IDisposable
    {
        public void Dispose()
        {
            var elapsed = owner.Now() - start;
            owner._ops[op] = owner._ops.TryGetValue(op, out var total) ? (total.Ticks + elapsed, total.Calls + 1) : (elapsed, 1);
        }
    }

    protected override void FillCore(BufferView x, float value)
    {
        using var timer = Time("Fill");
        base.FillCore(x, value);
    }

    protected override void CopyCore(BufferView source, BufferView destination)
    {
        using var timer = Time("Copy");
        base.CopyCore(source, destination);
    }

    protected override void ScaleCore(float alpha, BufferView x)
    {
        using var timer = Time("Scale");
        base.ScaleCore(alpha, x);
    }

    protected override void AxpyCore(float alpha, BufferView x, BufferView y)
    {
        using var timer = Time("Axpy");
        base.AxpyCore(alpha, x, y);
    }

    protected override void WeightedSumCore(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination)
    {
        using var timer = Time("WeightedSum");
        base.WeightedSumCore(sources, weights, destination);
    }

    protected override double SumOfSquaresCore(BufferView x)
    {
        using var timer = Time("SumOfSquares");
        return base.SumOfSquaresCore(x);
    }

    protected override void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output)
    {
        using var timer = Time($"MatmulForward {c}x{o}");
        base.MatmulForwardCore(n, c, o, input, weight, bias, output);
    }

    protected override void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight, BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        using var timer = Time($"MatmulBackward {c}x{o}");
        base.MatmulBackwardCore(n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);
    }

    protected override void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output)
    {
        using var timer = Time($"LowRankMatmulForward {c}x{o}");
        base.LowRankMatmulForwardCore(n, c, o, rank, input, weight, bias, loraA, loraB, scale, rankIndices, loraHidden, output);
    }

    protected override void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input, BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate)
    {
        using var timer = Time($"LowRankMatmulBackward {c}x{o}");
        base.LowRankMatmulBackwardCore(n, c, o, rank, outputGrad, input, weight, loraA, loraB, scale, rankIndices, loraHidden, inputGrad, weightGrad, biasGrad, loraAGrad, loraBGrad, accumulate);
    }

    protected override void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient, BufferView subA, BufferView subB, BufferView loraA, BufferView loraB)
    {
        using var timer = Time("MaskedSketchUpdate");
        base.MaskedSketchUpdateCore(c, o, rank, rankIndices, coefficient, subA, subB, loraA, loraB);
    }

    protected override void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA, ReadOnlySpan<float> rowWeights, BufferView weight)
    {
        using var timer = Time("StackedAggregation");
        base.StackedAggregationCore(o, c, stackedRank, stackedB, stackedA, rowWeights, weight);
    }

    protected override void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias, BufferView output, BufferView mean, BufferView rstd)
    {
        using var timer = Time("LayerNormForward");
        base.LayerNormForwardCore(n, c, input, weight, bias, output, mean, rstd);
    }

    protected override void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight, BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad)
    {
        using var timer = Time("LayerNormBackward");
        base.LayerNormBackwardCore(n, c, outputGrad, input, weight, mean, rstd, inputGrad, weightGrad, biasGrad);
    }

    protected override void GeluForwardCore(BufferView input, BufferView output)
    {
        using var timer = Time("GeluForward");
        base.GeluForwardCore(input, output);
    }

    protected override void GeluBackwardCore(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        using var timer = Time("GeluBackward");
        base.GeluBackwardCore(input, outputGrad, inputGrad, accumulate);
    }

    protected override void ResidualForwardCore(BufferView a, BufferView b, BufferView output)
    {
        using var timer = Time("ResidualForward");
        base.ResidualForwardCore(a, b, output);
    }

    protected override void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad)
    {
        using var timer = Time("ResidualBackward");
        base.ResidualBackwardCore(outputGrad, aGrad, bGrad);
    }

    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        using var timer = Time("AttentionForward");
        base.AttentionForwardCore(b, t, c, heads, input, attention, output);
    }

    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        using var timer = Time("AttentionBackward");
        base.AttentionBackwardCore(b, t, c, heads, input, attention, outputGrad, inputGrad, accumulate);
    }

    protected override void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable, BufferView positionTable, BufferView output)
    {
        using var timer = Time("EmbeddingForward");
        base.EmbeddingForwardCore(b, t, c, vocab, tokens, tokenTable, positionTable, output);
    }

    protected override void EmbeddingBackwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad, BufferView? tokenTableGrad, BufferView? positionTableGrad)
    {
        using var timer = Time("EmbeddingBackward");
        base.EmbeddingBackwardCore(b, t, c, vocab, tokens, outputGrad, tokenTableGrad, positionTableGrad);
    }

    protected override void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets, BufferView probabilities, BufferView losses)
    {
        using var timer = Time("CrossEntropyForward");
        base.CrossEntropyForwardCore(n, vocab, logits, targets, probabilities, losses);
    }

    protected override void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets, float lossScale, BufferView logitsGrad, bool accumulate)
    {
        using var timer = Time("CrossEntropyBackward");
        base.CrossEntropyBackwardCore(n, vocab, probabilities, targets, lossScale, logitsGrad, accumulate);
    }

    protected override void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask, BufferView parameters, BufferView m, BufferView v)
    {
        using var timer = Time("AdamW");
        base.AdamWCore(in settings, timestep, grads, mask, parameters, m, v);
    }

    protected override void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters)
    {
        using var timer = Time("Sgd");
        base.SgdCore(learningRate, weightDecay, grads, mask, parameters);
    }
}
