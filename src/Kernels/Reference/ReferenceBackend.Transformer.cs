using FedLora.Kernels.Host;

namespace FedLora.Kernels.Reference;

// Layernorm, GELU, residual, attention, embedding, cross-entropy and the optimizers, following
// llm.c's train_gpt2.c loop for loop. An input gradient to be overwritten (accumulate false) is
// cleared, then accumulated into by the same loop.
public partial class ReferenceBackend
{
    private const double LayerNormEpsilon = 1e-5;

    /// <inheritdoc/>
    protected override void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias,
        BufferView output, BufferView mean, BufferView rstd)
    {
        var x = input.Span();
        var w = weight.Span();
        var b = bias.Span();
        var y = output.Span();
        var mu = mean.Span();
        var rs = rstd.Span();
        for (var i = 0; i < n; i++)
        {
            double m = 0;
            for (var p = 0; p < c; p++) m += x[i * c + p];
            m /= c;
            double variance = 0;
            for (var p = 0; p < c; p++) variance += (x[i * c + p] - m) * (x[i * c + p] - m);
            variance /= c;
            var s = 1.0 / Math.Sqrt(variance + LayerNormEpsilon);
            for (var p = 0; p < c; p++) y[i * c + p] = (float)((x[i * c + p] - m) * s * w[p] + b[p]);
            mu[i] = (float)m;
            rs[i] = (float)s;
        }
    }

    /// <inheritdoc/>
    protected override void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad)
    {
        var dy = outputGrad.Span();
        var x = input.Span();
        var w = weight.Span();
        var mu = mean.Span();
        var rs = rstd.Span();
        var dx = inputGrad.Span();
        var dw = weightGrad.SpanOrEmpty();
        var db = biasGrad.SpanOrEmpty();
        for (var i = 0; i < n; i++)
        {
            // dnorm = dy * w; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)).
            double dnormMean = 0, dnormNormMean = 0;
            for (var p = 0; p < c; p++)
            {
                var norm = (x[i * c + p] - mu[i]) * (double)rs[i];
                var dnorm = (double)w[p] * dy[i * c + p];
                dnormMean += dnorm;
                dnormNormMean += dnorm * norm;
            }
            dnormMean /= c;
            dnormNormMean /= c;
            for (var p = 0; p < c; p++)
            {
                var norm = (x[i * c + p] - mu[i]) * (double)rs[i];
                var dnorm = (double)w[p] * dy[i * c + p];
                if (!db.IsEmpty) db[p] += dy[i * c + p];
                if (!dw.IsEmpty) dw[p] += (float)(norm * dy[i * c + p]);
                dx[i * c + p] += (float)(rs[i] * (dnorm - dnormMean - norm * dnormNormMean));
            }
        }
    }

    private static readonly double GeluScale = Math.Sqrt(2.0 / Math.PI);

    /// <inheritdoc/>
    protected override void GeluForwardCore(BufferView input, BufferView output)
    {
        var x = input.Span();
        var y = output.Span();
        for (var i = 0; i < x.Length; i++)
        {
            double v = x[i];
            y[i] = (float)(0.5 * v * (1 + Math.Tanh(GeluScale * (v + 0.044715 * v * v * v))));
        }
    }

    /// <inheritdoc/>
    protected override void GeluBackwardCore(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        var x = input.Span();
        var dy = outputGrad.Span();
        var dx = inputGrad.Span();
        if (!accumulate) dx.Clear();
        for (var i = 0; i < x.Length; i++)
        {
            double v = x[i];
            var tanh = Math.Tanh(GeluScale * (v + 0.044715 * v * v * v));
            var sech2 = 1 - tanh * tanh;
            var derivative = 0.5 * (1 + tanh) + 0.5 * v * sech2 * GeluScale * (1 + 3 * 0.044715 * v * v);
            dx[i] += (float)(derivative * dy[i]);
        }
    }

    /// <inheritdoc/>
    protected override void ResidualForwardCore(BufferView a, BufferView b, BufferView output)
    {
        var x = a.Span();
        var y = b.Span();
        var z = output.Span();
        for (var i = 0; i < x.Length; i++) z[i] = x[i] + y[i];
    }

    /// <inheritdoc/>
    protected override void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad)
    {
        var dz = outputGrad.Span();
        var dx = aGrad.Span();
        var dy = bGrad.Span();
        for (var i = 0; i < dz.Length; i++)
        {
            dx[i] += dz[i];
            dy[i] += dz[i];
        }
    }

    /// <inheritdoc/>
    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        var qkv = input.Span();
        var att = attention.Span();
        var y = output.Span();
        var hs = heads == 0 ? 0 : c / heads;
        var scale = 1.0 / Math.Sqrt(hs);
        var scores = new double[t];
        for (var bb = 0; bb < b; bb++)
        {
            for (var h = 0; h < heads; h++)
            {
                for (var i = 0; i < t; i++)
                {
                    var q = (bb * t + i) * 3 * c + h * hs;
                    var max = double.NegativeInfinity;
                    for (var j = 0; j <= i; j++)
                    {
                        var key = (bb * t + j) * 3 * c + c + h * hs;
                        double dot = 0;
                        for (var d = 0; d < hs; d++) dot += (double)qkv[q + d] * qkv[key + d];
                        scores[j] = dot * scale;
                        max = Math.Max(max, scores[j]);
                    }
                    double sum = 0;
                    for (var j = 0; j <= i; j++)
                    {
                        scores[j] = Math.Exp(scores[j] - max);
                        sum += scores[j];
                    }
                    var row = ((bb * heads + h) * t + i) * t;
                    for (var j = 0; j < t; j++) att[row + j] = j <= i ? (float)(scores[j] / sum) : 0f;
                    for (var d = 0; d < hs; d++)
                    {
                        double acc = 0;
                        for (var j = 0; j <= i; j++) acc += scores[j] / sum * qkv[(bb * t + j) * 3 * c + 2 * c + h * hs + d];
                        y[(bb * t + i) * c + h * hs + d] = (float)acc;
                    }
                }
            }
        }
    }

    /// <inheritdoc/>
    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        var qkv = input.Span();
        var att = attention.Span();
        var dy = outputGrad.Span();
        var dqkv = inputGrad.Span();
        if (!accumulate) dqkv.Clear();
        var hs = heads == 0 ? 0 : c / heads;
        var scale = 1.0 / Math.Sqrt(hs);
        var datt = new double[t];
        for (var bb = 0; bb < b; bb++)
        {
            for (var h = 0; h < heads; h++)
            {
                for (var i = 0; i < t; i++)
                {
                    var row = ((bb * heads + h) * t + i) * t;
                    var dyRow = (bb * t + i) * c + h * hs;
                    // datt[j] = dy_i . v_j; dv_j += att[i,j] dy_i.
                    for (var j = 0; j <= i; j++)
                    {
                        var v = (bb * t + j) * 3 * c + 2 * c + h * hs;
                        double dot = 0;
                        for (var d = 0; d < hs; d++)
                        {
                            dot += (double)dy[dyRow + d] * qkv[v + d];
                            dqkv[v + d] += att[row + j] * dy[dyRow + d];
                        }
                        datt[j] = dot;
                    }
                    // Softmax backward: dpre[j] = att[j] (datt[j] - sum_l att[l] datt[l]).
                    double weighted = 0;
                    for (var j = 0; j <= i; j++) weighted += att[row + j] * datt[j];
                    var q = (bb * t + i) * 3 * c + h * hs;
                    for (var j = 0; j <= i; j++)
                    {
                        var dpre = att[row + j] * (datt[j] - weighted) * scale;
                        var key = (bb * t + j) * 3 * c + c + h * hs;
                        for (var d = 0; d < hs; d++)
                        {
                            dqkv[q + d] += (float)(dpre * qkv[key + d]);
                            dqkv[key + d] += (float)(dpre * qkv[q + d]);
                        }
                    }
                }
            }
        }
    }

    /// <inheritdoc/>
    protected override void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable,
        BufferView positionTable, BufferView output)
    {
        var wte = tokenTable.Span();
        var wpe = positionTable.Span();
        var y = output.Span();
        for (var bb = 0; bb < b; bb++)
        {
            for (var i = 0; i < t; i++)
            {
                var token = tokens[bb * t + i];
                for (var p = 0; p < c; p++) y[(bb * t + i) * c + p] = wte[token * c + p] + wpe[i * c + p];
            }
        }
    }

    /// <inheritdoc/>
    protected override void EmbeddingBackwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad,
        BufferView? tokenTableGrad, BufferView? positionTableGrad)
    {
        var dy = outputGrad.Span();
        var dwte = tokenTableGrad.SpanOrEmpty();
        var dwpe = positionTableGrad.SpanOrEmpty();
        for (var bb = 0; bb < b; bb++)
        {
            for (var i = 0; i < t; i++)
            {
                var token = tokens[bb * t + i];
                for (var p = 0; p < c; p++)
                {
                    var g = dy[(bb * t + i) * c + p];
                    if (!dwte.IsEmpty) dwte[token * c + p] += g;
                    if (!dwpe.IsEmpty) dwpe[i * c + p] += g;
                }
            }
        }
    }

    /// <inheritdoc/>
    protected override void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets,
        BufferView probabilities, BufferView losses)
    {
        var z = logits.Span();
        var probs = probabilities.Span();
        var loss = losses.Span();
        for (var i = 0; i < n; i++)
        {
            var max = double.NegativeInfinity;
            for (var v = 0; v < vocab; v++) max = Math.Max(max, z[i * vocab + v]);
            double sum = 0;
            for (var v = 0; v < vocab; v++) sum += Math.Exp(z[i * vocab + v] - max);
            for (var v = 0; v < vocab; v++) probs[i * vocab + v] = (float)(Math.Exp(z[i * vocab + v] - max) / sum);
            loss[i] = targets[i] < 0 ? 0f : (float)(Math.Log(sum) + max - z[i * vocab + targets[i]]);
        }
    }

    /// <inheritdoc/>
    protected override void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets,
        float lossScale, BufferView logitsGrad, bool accumulate)
    {
        var probs = probabilities.Span();
        var dz = logitsGrad.Span();
        if (!accumulate) dz.Clear();
        for (var i = 0; i < n; i++)
        {
            if (targets[i] < 0) continue;
            for (var v = 0; v < vocab; v++)
            {
                var indicator = v == targets[i] ? 1.0 : 0.0;
                dz[i * vocab + v] += (float)(lossScale * (probs[i * vocab + v] - indicator));
            }
        }
    }

    /// <inheritdoc/>
    protected override void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask,
        BufferView parameters, BufferView m, BufferView v)
    {
        var g = grads.Span();
        var keep = mask.SpanOrEmpty();
        var p = parameters.Span();
        var m1 = m.Span();
        var m2 = v.Span();
        var correction1 = 1 - Math.Pow(settings.Beta1, timestep);
        var correction2 = 1 - Math.Pow(settings.Beta2, timestep);
        for (var i = 0; i < g.Length; i++)
        {
            if (!keep.IsEmpty && keep[i] == 0f) continue;
            var mi = settings.Beta1 * (double)m1[i] + (1 - settings.Beta1) * (double)g[i];
            var vi = settings.Beta2 * (double)m2[i] + (1 - settings.Beta2) * (double)g[i] * g[i];
            var update = mi / correction1 / (Math.Sqrt(vi / correction2) + settings.Epsilon) + settings.WeightDecay * (double)p[i];
            m1[i] = (float)mi;
            m2[i] = (float)vi;
            p[i] = (float)(p[i] - settings.LearningRate * update);
        }
    }

    /// <inheritdoc/>
    protected override void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters)
    {
        var g = grads.Span();
        var keep = mask.SpanOrEmpty();
        var p = parameters.Span();
        for (var i = 0; i < g.Length; i++)
        {
            if (!keep.IsEmpty && keep[i] == 0f) continue;
            p[i] = (float)(p[i] - learningRate * ((double)g[i] + weightDecay * (double)p[i]));
        }
    }
}
