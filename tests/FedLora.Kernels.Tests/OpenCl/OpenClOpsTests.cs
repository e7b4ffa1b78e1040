namespace FedLora.Kernels.Tests.OpenCl;

/// <summary>
/// Every op of the OpenCL backend against the Reference on odd shapes (0, 1, 7, 17, 33, 129), with
/// device views at non-zero offsets inside guarded buffers (see <see cref="GuardedTwin"/>), under
/// every tuning the backend has, whatever the device: each must be right everywhere.
/// </summary>
public class OpenClOpsTests
{
    private const float MatmulTolerance = 1e-4f;
    private const float ElementTolerance = 1e-5f;

    private static GuardedTwin On(string style) => new(OpenClStyles.Get(style));

    /// <summary>Every row of theory data once per style, the style first.</summary>
    private static IEnumerable<object?[]> Styled(params object?[][] rows) =>
        from style in OpenClStyles.Names from row in rows select (object?[])[style, .. row];

    public static IEnumerable<object?[]> Lengths() => Styled([0], [1], [7], [17], [33], [129], [1000], [65_537]);

    // (N, C, O): every size of the sweep appears in each position, plus empty dimensions, and each of
    // the three products with K > 256 (the CPU GEMM's K-slabs: forward K = C, dinp K = O, dW K = N).
    public static IEnumerable<object?[]> MatmulShapes() => Styled(
        [0, 7, 17], [7, 0, 17], [7, 17, 0], [1, 1, 1], [7, 17, 33], [17, 33, 7], [33, 129, 17],
        [129, 7, 33], [1, 129, 129], [129, 129, 1], [129, 33, 129], [65, 70, 66], [12, 16, 64],
        [19, 600, 35], [13, 9, 530], [530, 7, 9]);

    // (N, C, O, r, index set or null).
    public static IEnumerable<object?[]> LowRankShapes() => Styled(
        [7, 17, 33, 4, null], [17, 33, 7, 7, new[] { 5, 0, 3 }], [1, 1, 1, 1, new[] { 0 }],
        [33, 129, 17, 17, new[] { 16, 2, 9, 11, 0, 4, 8, 1, 13 }], [129, 7, 33, 1, null], [0, 7, 17, 3, new[] { 2 }],
        [7, 17, 33, 5, Array.Empty<int>()], [33, 17, 129, 8, new[] { 7, 6, 5, 4, 3, 2, 1, 0 }]);

    // (c, o, r, index set).
    public static IEnumerable<object?[]> SketchShapes() => Styled(
        [17, 33, 7, new[] { 5, 0, 3 }], [1, 1, 1, new[] { 0 }], [129, 7, 17, new[] { 16, 2, 9, 11, 0, 4, 8, 1, 13 }],
        [7, 0, 4, Array.Empty<int>()], [0, 17, 4, new[] { 3, 1 }]);

    // (O, C, R).
    public static IEnumerable<object?[]> StackedShapes() => Styled([7, 17, 33], [33, 129, 7], [1, 1, 1], [17, 7, 0], [129, 33, 17]);

    // (N, C).
    public static IEnumerable<object?[]> RowShapes() => Styled([0, 7], [1, 1], [7, 17], [17, 33], [33, 129], [5, 768], [3, 1029]);

    // (B, T, C, NH).
    public static IEnumerable<object?[]> AttentionShapes() => Styled(
        [1, 1, 4, 1], [2, 7, 12, 3], [1, 17, 8, 2], [2, 33, 16, 4], [1, 129, 8, 1], [2, 40, 128, 2], [0, 7, 4, 2], [3, 0, 4, 2]);

    // (B, T, C, V, distinct token ids): few, with many repeats (the backward pass must add every
    // occurrence), or many (nearly one group per row).
    public static IEnumerable<object?[]> EmbeddingShapes() => Styled(
        [1, 1, 1, 1, 1], [2, 7, 17, 5, 4], [3, 17, 33, 257, 4], [3, 17, 33, 257, 257], [2, 33, 7, 1000, 1000], [1, 129, 7, 3, 3], [0, 4, 7, 5, 4]);

    // (N, V).
    public static IEnumerable<object?[]> CrossEntropyShapes() => Styled([1, 1], [7, 17], [17, 257], [33, 129], [3, 1029], [0, 7]);

    // (sources, length).
    public static IEnumerable<object?[]> WeightedSumShapes() => Styled([0, 33], [1, 7], [8, 129], [9, 17], [17, 1000], [3, 0]);

    [OpenClTheory, MemberData(nameof(MatmulShapes))]
    public void MatmulForward_OddShapes_MatchesReference(string style, int n, int c, int o)
    {
        using var g = On(style);
        var x = g.Random(n * c);
        var w = g.Random(o * c);
        var bias = g.Random(o);
        var y = g.Random(n * o);
        var yNoBias = g.Random(n * o);
        g.Both((b, v) =>
        {
            b.MatmulForward(n, c, o, v(x), v(w), v(bias), v(y));
            b.MatmulForward(n, c, o, v(x), v(w), null, v(yNoBias));
        });
        g.AssertClose(y, MatmulTolerance, MatmulTolerance, "matmul forward");
        g.AssertClose(yNoBias, MatmulTolerance, MatmulTolerance, "matmul forward without bias");
    }

    [OpenClTheory, MemberData(nameof(MatmulShapes))]
    public void MatmulBackward_OddShapes_AccumulatesLikeReference(string style, int n, int c, int o)
    {
        using var g = On(style);
        var dy = g.Random(n * o);
        var x = g.Random(n * c);
        var w = g.Random(o * c);
        var dx = g.Random(n * c);
        var dw = g.Random(o * c);
        var db = g.Random(o);
        var dxOnly = g.Random(n * c);
        g.Both((b, v) =>
        {
            b.MatmulBackward(n, c, o, v(dy), v(x), v(w), v(dx), v(dw), v(db));
            b.MatmulBackward(n, c, o, v(dy), v(x), v(w), v(dxOnly), null, null);
        });
        g.AssertClose(dx, MatmulTolerance, MatmulTolerance, "input grad");
        g.AssertClose(dw, MatmulTolerance, MatmulTolerance, "weight grad");
        g.AssertClose(db, MatmulTolerance, MatmulTolerance, "bias grad");
        g.AssertClose(dxOnly, MatmulTolerance, MatmulTolerance, "input grad alone");
    }

    [OpenClTheory, MemberData(nameof(LowRankShapes))]
    public void LowRankMatmulForward_OddShapes_MatchesReference(string style, int n, int c, int o, int rank, int[]? indices)
    {
        using var g = On(style);
        var k = indices?.Length ?? rank;
        var x = g.Random(n * c);
        var w = g.Random(o * c);
        var bias = g.Random(o);
        var a = g.Random(rank * c);
        var bl = g.Random(o * rank);
        var t = g.Random(n * k);
        var y = g.Random(n * o);
        g.Both((b, v) => b.LowRankMatmulForward(n, c, o, rank, v(x), v(w), v(bias), v(a), v(bl), 0.75f, indices, v(t), v(y)));
        g.AssertClose(t, MatmulTolerance, MatmulTolerance, "lora hidden");
        g.AssertClose(y, MatmulTolerance, MatmulTolerance, "low-rank output");
    }

    [OpenClTheory, MemberData(nameof(LowRankShapes))]
    public void LowRankMatmulBackward_OddShapes_AccumulatesLikeReference(string style, int n, int c, int o, int rank, int[]? indices)
    {
        using var g = On(style);
        var k = indices?.Length ?? rank;
        var dy = g.Random(n * o);
        var x = g.Random(n * c);
        var w = g.Random(o * c);
        var a = g.Random(rank * c);
        var bl = g.Random(o * rank);
        var t = g.Random(n * k);
        var dx = g.Random(n * c);
        var dw = g.Random(o * c);
        var db = g.Random(o);
        var da = g.Random(rank * c);
        var dbl = g.Random(o * rank);
        var daOnly = g.Random(rank * c);
        var dblOnly = g.Random(o * rank);
        g.Both((b, v) =>
        {
            b.LowRankMatmulBackward(n, c, o, rank, v(dy), v(x), v(w), v(a), v(bl), 1.5f, indices, v(t), v(dx), v(dw), v(db), v(da), v(dbl));
            // A frozen base weight and no input gradient: only the adapter's gradients, one at a time.
            b.LowRankMatmulBackward(n, c, o, rank, v(dy), v(x), v(w), v(a), v(bl), 1.5f, indices, v(t), null, null, null, v(daOnly), null);
            b.LowRankMatmulBackward(n, c, o, rank, v(dy), v(x), v(w), v(a), v(bl), 1.5f, indices, v(t), null, null, null, null, v(dblOnly));
        });
        g.AssertClose(dx, MatmulTolerance, MatmulTolerance, "input grad");
        g.AssertClose(dw, MatmulTolerance, MatmulTolerance, "weight grad");
        g.AssertClose(db, MatmulTolerance, MatmulTolerance, "bias grad");
        g.AssertClose(da, MatmulTolerance, MatmulTolerance, "A grad");
        g.AssertClose(dbl, MatmulTolerance, MatmulTolerance, "B grad");
        g.AssertClose(daOnly, MatmulTolerance, MatmulTolerance, "A grad alone");
        g.AssertClose(dblOnly, MatmulTolerance, MatmulTolerance, "B grad alone");
    }

    [OpenClTheory, MemberData(nameof(SketchShapes))]
    public void MaskedSketchUpdate_IndexSets_MatchReference(string style, int c, int o, int rank, int[] indices)
    {
        using var g = On(style);
        var k = indices.Length;
        var subA = g.Random(k * c);
        var subB = g.Random(o * k);
        var a = g.Random(rank * c);
        var bl = g.Random(o * rank);
        g.Both((b, v) => b.MaskedSketchUpdate(c, o, rank, indices, -0.5f, v(subA), v(subB), v(a), v(bl)));
        g.AssertClose(a, ElementTolerance, ElementTolerance, "A");
        g.AssertClose(bl, ElementTolerance, ElementTolerance, "B");
    }

    [OpenClTheory, MemberData(nameof(StackedShapes))]
    public void StackedAggregation_OddShapes_MatchesReference(string style, int o, int c, int stackedRank)
    {
        using var g = On(style);
        var stackedB = g.Random(o * stackedRank);
        var stackedA = g.Random(stackedRank * c);
        var weights = g.Twin.RandomValues(stackedRank, 2f);
        var w = g.Random(o * c);
        g.Both((b, v) => b.StackedAggregation(o, c, stackedRank, v(stackedB), v(stackedA), weights, v(w)));
        g.AssertClose(w, MatmulTolerance, MatmulTolerance, "aggregated weight");
    }

    [OpenClTheory, MemberData(nameof(RowShapes))]
    public void LayerNorm_ForwardAndBackward_MatchReference(string style, int n, int c)
    {
        using var g = On(style);
        var x = g.Random(n * c, 3f);
        var weight = g.Random(c);
        var bias = g.Random(c);
        var y = g.Random(n * c);
        var mean = g.Random(n);
        var rstd = g.Random(n);
        var dy = g.Random(n * c);
        var dx = g.Random(n * c);
        var dw = g.Random(c);
        var db = g.Random(c);
        var dxOnly = g.Random(n * c);
        g.Both((b, v) =>
        {
            b.LayerNormForward(n, c, v(x), v(weight), v(bias), v(y), v(mean), v(rstd));
            b.LayerNormBackward(n, c, v(dy), v(x), v(weight), v(mean), v(rstd), v(dx), v(dw), v(db));
            b.LayerNormBackward(n, c, v(dy), v(x), v(weight), v(mean), v(rstd), v(dxOnly), null, null);
        });
        g.AssertClose(y, ElementTolerance * 10, ElementTolerance * 10, "layernorm output");
        g.AssertClose(mean, ElementTolerance, ElementTolerance, "mean");
        g.AssertClose(rstd, ElementTolerance, ElementTolerance * 10, "rstd");
        g.AssertClose(dx, MatmulTolerance, MatmulTolerance, "input grad");
        g.AssertClose(dw, MatmulTolerance, MatmulTolerance, "weight grad");
        g.AssertClose(db, MatmulTolerance, MatmulTolerance, "bias grad");
        g.AssertClose(dxOnly, MatmulTolerance, MatmulTolerance, "input grad alone");
    }

    [OpenClTheory, MemberData(nameof(Lengths))]
    public void GeluAndResidual_ForwardAndBackward_MatchReference(string style, int length)
    {
        using var g = On(style);
        // The tails (u << 0, where 1 + tanh(u) cancels in float, and saturation) end the sweep.
        var values = g.Twin.RandomValues(length, 5f);
        float[] specials = [0f, -5f, -4.6f, 9.5f, -9.5f, 40f, -40f, 1e-20f];
        for (var i = 0; i < Math.Min(length, specials.Length); i++) values[length - 1 - i] = specials[i];
        var x = g.Tensor(values);
        var y = g.Random(length);
        var dy = g.Random(length);
        var dx = g.Random(length);
        var other = g.Random(length);
        var sum = g.Random(length);
        var da = g.Random(length);
        var dothers = g.Random(length);
        g.Both((b, v) =>
        {
            b.GeluForward(v(x), v(y));
            b.GeluBackward(v(x), v(dy), v(dx));
            b.ResidualForward(v(x), v(other), v(sum));
            b.ResidualBackward(v(dy), v(da), v(dothers));
        });
        g.AssertClose(y, 1e-7f, 2e-6f, "gelu");
        g.AssertClose(dx, 1e-6f, 2e-6f, "gelu grad");
        g.AssertClose(sum, ElementTolerance, ElementTolerance, "residual");
        g.AssertClose(da, ElementTolerance, ElementTolerance, "residual grad a");
        g.AssertClose(dothers, ElementTolerance, ElementTolerance, "residual grad b");
    }

    [OpenClTheory, MemberData(nameof(AttentionShapes))]
    public void Attention_ForwardAndBackward_MatchReference(string style, int b, int t, int c, int heads)
    {
        using var g = On(style);
        var qkv = g.Random(b * t * 3 * c, 2f);
        var att = g.Random(b * heads * t * t);
        var y = g.Random(b * t * c);
        var dy = g.Random(b * t * c);
        var dqkv = g.Random(b * t * 3 * c);
        g.Both((backend, v) =>
        {
            backend.AttentionForward(b, t, c, heads, v(qkv), v(att), v(y));
            backend.AttentionBackward(b, t, c, heads, v(qkv), v(att), v(dy), v(dqkv));
        });
        g.AssertClose(att, ElementTolerance, MatmulTolerance, "attention weights");
        g.AssertClose(y, MatmulTolerance, MatmulTolerance, "attention output");
        g.AssertClose(dqkv, MatmulTolerance, MatmulTolerance, "qkv grad");
    }

    [OpenClTheory, MemberData(nameof(EmbeddingShapes))]
    public void Embedding_ForwardAndBackward_MatchReference(string style, int b, int t, int c, int vocab, int distinct)
    {
        using var g = On(style);
        var tokens = Enumerable.Range(0, b * t).Select(i => g.Twin.Rng.Next(distinct) * (vocab / distinct)).ToArray();
        var wte = g.Random(vocab * c);
        var wpe = g.Random((t + 2) * c);
        var y = g.Random(b * t * c);
        var dy = g.Random(b * t * c);
        var dwte = g.Random(vocab * c);
        var dwpe = g.Random((t + 2) * c);
        var dwteOnly = g.Random(vocab * c);
        g.Both((backend, v) =>
        {
            backend.EmbeddingForward(b, t, c, vocab, tokens, v(wte), v(wpe), v(y));
            backend.EmbeddingBackward(b, t, c, vocab, tokens, v(dy), v(dwte), v(dwpe));
            backend.EmbeddingBackward(b, t, c, vocab, tokens, v(dy), v(dwteOnly), null);
        });
        g.AssertClose(y, ElementTolerance, ElementTolerance, "embedding");
        g.AssertClose(dwte, ElementTolerance, ElementTolerance, "token table grad");
        g.AssertClose(dwpe, ElementTolerance, ElementTolerance, "position table grad");
        g.AssertClose(dwteOnly, ElementTolerance, ElementTolerance, "token table grad alone");
    }

    [OpenClTheory, MemberData(nameof(CrossEntropyShapes))]
    public void CrossEntropy_ForwardAndBackward_MatchReference(string style, int n, int vocab)
    {
        using var g = On(style);
        var targets = Enumerable.Range(0, n).Select(i => i % 5 == 3 ? -1 : g.Twin.Rng.Next(vocab)).ToArray();
        var logits = g.Random(n * vocab, 8f);
        var probs = g.Random(n * vocab);
        var losses = g.Random(n);
        var dz = g.Random(n * vocab);
        g.Both((b, v) =>
        {
            b.CrossEntropyForward(n, vocab, v(logits), targets, v(probs), v(losses));
            b.CrossEntropyBackward(n, vocab, v(probs), targets, 0.25f, v(dz));
        });
        g.AssertClose(probs, 1e-6f, MatmulTolerance, "probabilities");
        g.AssertClose(losses, ElementTolerance, ElementTolerance, "losses");
        g.AssertClose(dz, ElementTolerance, ElementTolerance, "logit grad");
    }

    [OpenClTheory, MemberData(nameof(Lengths))]
    public void Optimizers_WithAndWithoutMask_MatchReference(string style, int length)
    {
        using var g = On(style);
        var grads = g.Random(length);
        var mask = g.Tensor(Enumerable.Range(0, length).Select(i => i % 3 == 1 ? 0f : 1f).ToArray());
        var p1 = g.Random(length);
        var m1 = g.Random(length, 0.1f);
        var v1 = g.Tensor(g.Twin.RandomValues(length, 0.1f).Select(Math.Abs).ToArray());
        var p2 = g.Random(length);
        var m2 = g.Zeros(length);
        var v2 = g.Zeros(length);
        var p3 = g.Random(length);
        var p4 = g.Random(length);
        var settings = new AdamWSettings(LearningRate: 1e-2f, WeightDecay: 0.1f);
        g.Both((b, v) =>
        {
            b.AdamW(settings, 3, v(grads), v(mask), v(p1), v(m1), v(v1));
            b.AdamW(settings, 1, v(grads), null, v(p2), v(m2), v(v2));
            b.Sgd(0.05f, 0.01f, v(grads), v(mask), v(p3));
            b.Sgd(0.05f, 0f, v(grads), null, v(p4));
        });
        g.AssertClose(p1, ElementTolerance, ElementTolerance, "adamw masked parameters");
        g.AssertClose(m1, ElementTolerance, ElementTolerance, "adamw masked m");
        g.AssertClose(v1, ElementTolerance, ElementTolerance, "adamw masked v");
        g.AssertClose(p2, ElementTolerance, ElementTolerance, "adamw parameters");
        g.AssertClose(m2, ElementTolerance, ElementTolerance, "adamw m");
        g.AssertClose(v2, ElementTolerance, ElementTolerance, "adamw v");
        g.AssertClose(p3, ElementTolerance, ElementTolerance, "sgd masked");
        g.AssertClose(p4, ElementTolerance, ElementTolerance, "sgd");
    }

    [OpenClTheory, MemberData(nameof(Lengths))]
    public void VectorOps_OffsetViews_MatchReference(string style, int length)
    {
        using var g = On(style);
        var x = g.Random(length);
        var y = g.Random(length);
        var z = g.Random(length);
        var copy = g.Random(length);
        g.Both((b, v) =>
        {
            b.Fill(v(z), -2.5f);
            b.Axpy(0.75f, v(x), v(z));
            b.Scale(-3f, v(y));
            b.Copy(v(y), v(copy));
        });
        g.AssertClose(z, ElementTolerance, ElementTolerance, "fill + axpy");
        g.AssertClose(y, 0, 0, "scale");
        g.AssertClose(copy, 0, 0, "copy");
        var expected = g.Reference.SumOfSquares(x.Reference);
        var actual = g.Device.SumOfSquares(x.Device);
        Assert.True(Math.Abs(expected - actual) <= 1e-9 + 1e-6 * expected, $"sum of squares {actual}, expected {expected}");
    }

    [OpenClTheory, MemberData(nameof(WeightedSumShapes))]
    public void WeightedSum_AnySourceCount_MatchesReference(string style, int sources, int length)
    {
        using var g = On(style);
        var xs = Enumerable.Range(0, sources).Select(_ => g.Random(length)).ToArray();
        var weights = g.Twin.RandomValues(sources);
        var y = g.Random(length);
        g.Both((b, v) => b.WeightedSum(xs.Select(v).ToArray(), weights, v(y)));
        g.AssertClose(y, ElementTolerance, ElementTolerance, "weighted sum");
    }
}
