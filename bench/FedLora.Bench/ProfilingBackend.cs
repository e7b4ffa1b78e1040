using System.Diagnostics;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;

namespace FedLora.Bench;

/// <summary>
/// The Cpu backend with a stopwatch around every op: wall time per op (matmul-family ops per C x O
/// shape), summed over calls, for `--profile-lora-step`. Allocation and transfers are not timed.
/// </summary>
internal sealed class ProfilingBackend : CpuBackend
{
    private readonly Dictionary<string, (long Ticks, int Calls)> _ops = [];

    /// <summary>Each op's summed wall time in seconds and call count, since construction or <see cref="Reset"/>.</summary>
    public IEnumerable<(string Op, double Seconds, int Calls)> Ops =>
        _ops.Select(entry => (entry.Key, entry.Value.Ticks / (double)Stopwatch.Frequency, entry.Value.Calls));

    public void Reset() => _ops.Clear();

    private void Record(string op, long start)
    {
        var elapsed = Stopwatch.GetTimestamp() - start;
        _ops[op] = _ops.TryGetValue(op, out var total) ? (total.Ticks + elapsed, total.Calls + 1) : (elapsed, 1);
    }

    protected override void FillCore(BufferView x, float value)
    {
        var start = Stopwatch.GetTimestamp();
        base.FillCore(x, value);
        Record("Fill", start);
    }

    protected override void CopyCore(BufferView source, BufferView destination)
    {
        var start = Stopwatch.GetTimestamp();
        base.CopyCore(source, destination);
        Record("Copy", start);
    }

    protected override void ScaleCore(float alpha, BufferView x)
    {
        var start = Stopwatch.GetTimestamp();
        base.ScaleCore(alpha, x);
        Record("Scale", start);
    }

    protected override void AxpyCore(float alpha, BufferView x, BufferView y)
    {
        var start = Stopwatch.GetTimestamp();
        base.AxpyCore(alpha, x, y);
        Record("Axpy", start);
    }

    protected override void WeightedSumCore(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination)
    {
        var start = Stopwatch.GetTimestamp();
        base.WeightedSumCore(sources, weights, destination);
        Record("WeightedSum", start);
    }

    protected override double SumOfSquaresCore(BufferView x)
    {
        var start = Stopwatch.GetTimestamp();
        var result = base.SumOfSquaresCore(x);
        Record("SumOfSquares", start);
        return result;
    }

    protected override void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output)
    {
        var start = Stopwatch.GetTimestamp();
        base.MatmulForwardCore(n, c, o, input, weight, bias, output);
        Record($"MatmulForward {c}x{o}", start);
    }

    protected override void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight, BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        var start = Stopwatch.GetTimestamp();
        base.MatmulBackwardCore(n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);
        Record($"MatmulBackward {c}x{o}", start);
    }

    protected override void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output)
    {
        var start = Stopwatch.GetTimestamp();
        base.LowRankMatmulForwardCore(n, c, o, rank, input, weight, bias, loraA, loraB, scale, rankIndices, loraHidden, output);
        Record($"LowRankMatmulForward {c}x{o}", start);
    }

    protected override void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input, BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate)
    {
        var start = Stopwatch.GetTimestamp();
        base.LowRankMatmulBackwardCore(n, c, o, rank, outputGrad, input, weight, loraA, loraB, scale, rankIndices, loraHidden, inputGrad, weightGrad, biasGrad, loraAGrad, loraBGrad, accumulate);
        Record($"LowRankMatmulBackward {c}x{o}", start);
    }

    protected override void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient, BufferView subA, BufferView subB, BufferView loraA, BufferView loraB)
    {
        var start = Stopwatch.GetTimestamp();
        base.MaskedSketchUpdateCore(c, o, rank, rankIndices, coefficient, subA, subB, loraA, loraB);
        Record("MaskedSketchUpdate", start);
    }

    protected override void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA, ReadOnlySpan<float> rowWeights, BufferView weight)
    {
        var start = Stopwatch.GetTimestamp();
        base.StackedAggregationCore(o, c, stackedRank, stackedB, stackedA, rowWeights, weight);
        Record("StackedAggregation", start);
    }

    protected override void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias, BufferView output, BufferView mean, BufferView rstd)
    {
        var start = Stopwatch.GetTimestamp();
        base.LayerNormForwardCore(n, c, input, weight, bias, output, mean, rstd);
        Record("LayerNormForward", start);
    }

    protected override void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight, BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad)
    {
        var start = Stopwatch.GetTimestamp();
        base.LayerNormBackwardCore(n, c, outputGrad, input, weight, mean, rstd, inputGrad, weightGrad, biasGrad);
        Record("LayerNormBackward", start);
    }

    protected override void GeluForwardCore(BufferView input, BufferView output)
    {
        var start = Stopwatch.GetTimestamp();
        base.GeluForwardCore(input, output);
        Record("GeluForward", start);
    }

    protected override void GeluBackwardCore(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        var start = Stopwatch.GetTimestamp();
        base.GeluBackwardCore(input, outputGrad, inputGrad, accumulate);
        Record("GeluBackward", start);
    }

    protected override void ResidualForwardCore(BufferView a, BufferView b, BufferView output)
    {
        var start = Stopwatch.GetTimestamp();
        base.ResidualForwardCore(a, b, output);
        Record("ResidualForward", start);
    }

    protected override void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad)
    {
        var start = Stopwatch.GetTimestamp();
        base.ResidualBackwardCore(outputGrad, aGrad, bGrad);
        Record("ResidualBackward", start);
    }

    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        var start = Stopwatch.GetTimestamp();
        base.AttentionForwardCore(b, t, c, heads, input, attention, output);
        Record("AttentionForward", start);
    }

    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        var start = Stopwatch.GetTimestamp();
        base.AttentionBackwardCore(b, t, c, heads, input, attention, outputGrad, inputGrad, accumulate);
        Record("AttentionBackward", start);
    }

    protected override void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable, BufferView positionTable, BufferView output)
    {
        var start = Stopwatch.GetTimestamp();
        base.EmbeddingForwardCore(b, t, c, vocab, tokens, tokenTable, positionTable, output);
        Record("EmbeddingForward", start);
    }

    protected override void EmbeddingBackwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad, BufferView? tokenTableGrad, BufferView? positionTableGrad)
    {
        var start = Stopwatch.GetTimestamp();
        base.EmbeddingBackwardCore(b, t, c, vocab, tokens, outputGrad, tokenTableGrad, positionTableGrad);
        Record("EmbeddingBackward", start);
    }

    protected override void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets, BufferView probabilities, BufferView losses)
    {
        var start = Stopwatch.GetTimestamp();
        base.CrossEntropyForwardCore(n, vocab, logits, targets, probabilities, losses);
        Record("CrossEntropyForward", start);
    }

    protected override void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets, float lossScale, BufferView logitsGrad, bool accumulate)
    {
        var start = Stopwatch.GetTimestamp();
        base.CrossEntropyBackwardCore(n, vocab, probabilities, targets, lossScale, logitsGrad, accumulate);
        Record("CrossEntropyBackward", start);
    }

    protected override void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask, BufferView parameters, BufferView m, BufferView v)
    {
        var start = Stopwatch.GetTimestamp();
        base.AdamWCore(in settings, timestep, grads, mask, parameters, m, v);
        Record("AdamW", start);
    }

    protected override void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters)
    {
        var start = Stopwatch.GetTimestamp();
        base.SgdCore(learningRate, weightDecay, grads, mask, parameters);
        Record("Sgd", start);
    }
}
