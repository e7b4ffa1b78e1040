using FedLora.Kernels.Host;

namespace FedLora.Kernels.Reference;

// Matmul, low-rank (LoRA) matmul, masked sketch update and stacked aggregation, as the naive
// triple loops they are defined by. An input gradient to be overwritten (accumulate false) is
// cleared, then accumulated into by the same loop.
public partial class ReferenceBackend
{
    /// <inheritdoc/>
    protected override void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output)
    {
        var x = input.Span();
        var w = weight.Span();
        var b = bias.SpanOrEmpty();
        var y = output.Span();
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < o; j++)
            {
                double sum = b.IsEmpty ? 0 : b[j];
                for (var p = 0; p < c; p++) sum += (double)x[i * c + p] * w[j * c + p];
                y[i * o + j] = (float)sum;
            }
        }
    }

    /// <inheritdoc/>
    protected override void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        var dy = outputGrad.Span();
        var x = input.Span();
        var w = weight.Span();
        if (inputGrad is { } dxView)
        {
            var dx = dxView.Span();
            if (!accumulate) dx.Clear();
            for (var i = 0; i < n; i++)
            {
                for (var p = 0; p < c; p++)
                {
                    double sum = 0;
                    for (var j = 0; j < o; j++) sum += (double)dy[i * o + j] * w[j * c + p];
                    dx[i * c + p] += (float)sum;
                }
            }
        }
        if (weightGrad is { } dwView)
        {
            var dw = dwView.Span();
            for (var j = 0; j < o; j++)
            {
                for (var p = 0; p < c; p++)
                {
                    double sum = 0;
                    for (var i = 0; i < n; i++) sum += (double)dy[i * o + j] * x[i * c + p];
                    dw[j * c + p] += (float)sum;
                }
            }
        }
        if (biasGrad is { } dbView)
        {
            var db = dbView.Span();
            for (var j = 0; j < o; j++)
            {
                double sum = 0;
                for (var i = 0; i < n; i++) sum += dy[i * o + j];
                db[j] += (float)sum;
            }
        }
    }

    /// <inheritdoc/>
    protected override void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias,
        BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output)
    {
        var x = input.Span();
        var a = loraA.Span();
        var bl = loraB.Span();
        var t = loraHidden.Span();
        var y = output.Span();
        var k = rankIndices?.Length ?? rank;
        MatmulForwardCore(n, c, o, input, weight, bias, output);
        for (var i = 0; i < n; i++)
        {
            for (var q = 0; q < k; q++)
            {
                var row = rankIndices?[q] ?? q;
                double sum = 0;
                for (var p = 0; p < c; p++) sum += (double)x[i * c + p] * a[row * c + p];
                t[i * k + q] = (float)sum;
            }
            for (var j = 0; j < o; j++)
            {
                double sum = 0;
                for (var q = 0; q < k; q++) sum += (double)t[i * k + q] * bl[j * rank + (rankIndices?[q] ?? q)];
                y[i * o + j] = (float)(y[i * o + j] + scale * sum);
            }
        }
    }

    /// <inheritdoc/>
    protected override void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input,
        BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate)
    {
        var dy = outputGrad.Span();
        var x = input.Span();
        var a = loraA.Span();
        var bl = loraB.Span();
        var t = loraHidden.Span();
        var k = rankIndices?.Length ?? rank;
        MatmulBackwardCore(n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);

        // u = dy B_I is (N,k).
        var u = new double[n * k];
        for (var i = 0; i < n; i++)
        {
            for (var q = 0; q < k; q++)
            {
                var col = rankIndices?[q] ?? q;
                double sum = 0;
                for (var j = 0; j < o; j++) sum += (double)dy[i * o + j] * bl[j * rank + col];
                u[i * k + q] = sum;
            }
        }
        if (loraBGrad is { } dbView)
        {
            var dB = dbView.Span();
            for (var j = 0; j < o; j++)
            {
                for (var q = 0; q < k; q++)
                {
                    double sum = 0;
                    for (var i = 0; i < n; i++) sum += (double)dy[i * o + j] * t[i * k + q];
                    dB[j * rank + (rankIndices?[q] ?? q)] += (float)(scale * sum);
                }
            }
        }
        if (loraAGrad is { } daView)
        {
            var dA = daView.Span();
            for (var q = 0; q < k; q++)
            {
                var row = rankIndices?[q] ?? q;
                for (var p = 0; p < c; p++)
                {
                    double sum = 0;
                    for (var i = 0; i < n; i++) sum += u[i * k + q] * x[i * c + p];
                    dA[row * c + p] += (float)(scale * sum);
                }
            }
        }
        if (inputGrad is { } dxView)
        {
            var dx = dxView.Span();
            for (var i = 0; i < n; i++)
            {
                for (var p = 0; p < c; p++)
                {
                    double sum = 0;
                    for (var q = 0; q < k; q++) sum += u[i * k + q] * a[(rankIndices?[q] ?? q) * c + p];
                    dx[i * c + p] += (float)(scale * sum);
                }
            }
        }
    }

    /// <inheritdoc/>
    protected override void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient,
        BufferView subA, BufferView subB, BufferView loraA, BufferView loraB)
    {
        var sa = subA.Span();
        var sb = subB.Span();
        var a = loraA.Span();
        var b = loraB.Span();
        var k = rankIndices.Length;
        for (var q = 0; q < k; q++)
        {
            for (var p = 0; p < c; p++) a[rankIndices[q] * c + p] += coefficient * sa[q * c + p];
        }
        for (var j = 0; j < o; j++)
        {
            for (var q = 0; q < k; q++) b[j * rank + rankIndices[q]] += coefficient * sb[j * k + q];
        }
    }

    /// <inheritdoc/>
    protected override void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA,
        ReadOnlySpan<float> rowWeights, BufferView weight)
    {
        var b = stackedB.Span();
        var a = stackedA.Span();
        var w = weight.Span();
        for (var j = 0; j < o; j++)
        {
            for (var p = 0; p < c; p++)
            {
                double sum = 0;
                for (var q = 0; q < stackedRank; q++) sum += (double)b[j * stackedRank + q] * rowWeights[q] * a[q * c + p];
                w[j * c + p] += (float)sum;
            }
        }
    }
}
