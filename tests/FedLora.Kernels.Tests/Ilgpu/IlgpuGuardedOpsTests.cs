namespace FedLora.Kernels.Tests.Ilgpu;

/// <summary>
/// The ILGPU backend's transformer, optimizer and vector ops against the Reference with every device
/// tensor a view at a non-zero offset inside a guarded buffer (see <see cref="GuardedTwin"/>), so that a
/// kernel that reads or writes outside its view is caught; odd shapes (0, 1, 7, 17, 33, 129, ...). The
/// matmul family has the same guard in <see cref="IlgpuGemmTests"/>. Carried over from the retired
/// OpenCL C backend's tests, so that no guard was lost with it.
/// </summary>
public sealed class IlgpuGuardedOpsTests
{
    private const float MatmulTolerance = 1e-4f;
    private const float ElementTolerance = 1e-5f;

    /// <summary>Every row of theory data on ILGPU's CPU accelerator, the backend name first.</summary>
    private static IEnumerable<object?[]> OnIlgpu(params object?[][] rows) => from row in rows select (object?[])["ilgpu-cpu", .. row];

    public static IEnumerable<object?[]> Lengths() => OnIlgpu([0], [1], [7], [17], [33], [129], [1000], [65_537]);

    // (N, C).
    public static IEnumerable<object?[]> RowShapes() => OnIlgpu([0, 7], [1, 1], [7, 17], [17, 33], [33, 129], [5, 768], [3, 1029]);

    // (B, T, C, NH).
    public static IEnumerable<object?[]> AttentionShapes() => OnIlgpu(
        [1, 1, 4, 1], [2, 7, 12, 3], [1, 17, 8, 2], [2, 33, 16, 4], [1, 129, 8, 1], [2, 40, 128, 2], [0, 7, 4, 2], [3, 0, 4, 2]);

    // (B, T, C, V, distinct token ids): few, with many repeats (the backward pass must add every
    // occurrence), or many (nearly one group per row).
    public static IEnumerable<object?[]> EmbeddingShapes() => OnIlgpu(
        [1, 1, 1, 1, 1], [2, 7, 17, 5, 4], [3, 17, 33, 257, 4], [3, 17, 33, 257, 257], [2, 33, 7, 1000, 1000], [1, 129, 7, 3, 3], [0, 4, 7, 5, 4]);

    // (N, V).
    public static IEnumerable<object?[]> CrossEntropyShapes() => OnIlgpu([1, 1], [7, 17], [17, 257], [33, 129], [3, 1029], [0, 7]);

    // (sources, length).
    public static IEnumerable<object?[]> WeightedSumShapes() => OnIlgpu([0, 33], [1, 7], [8, 129], [9, 17], [17, 1000], [3, 0]);

    [Theory, MemberData(nameof(RowShapes))]
    public void LayerNorm_ForwardAndBackward_MatchReference(string backend, int n, int c)
    {
        using var g = new GuardedTwin(backend);
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

    [Theory, MemberData(nameof(Lengths))]
    public void GeluAndResidual_ForwardAndBackward_MatchReference(string backend, int length)
    {
        using var g = new GuardedTwin(backend);
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

    [Theory, MemberData(nameof(AttentionShapes))]
    public void Attention_ForwardAndBackward_MatchReference(string backend, int b, int t, int c, int heads)
    {
        using var g = new GuardedTwin(backend);
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

    [Theory, MemberData(nameof(EmbeddingShapes))]
    public void Embedding_ForwardAndBackward_MatchReference(string backend, int b, int t, int c, int vocab, int distinct)
    {
        using var g = new GuardedTwin(backend);
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

    [Theory, MemberData(nameof(CrossEntropyShapes))]
    public void CrossEntropy_ForwardAndBackward_MatchReference(string backend, int n, int vocab)
    {
        using var g = new GuardedTwin(backend);
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

    [Theory, MemberData(nameof(Lengths))]
    public void Optimizers_WithAndWithoutMask_MatchReference(string backend, int length)
    {
        using var g = new GuardedTwin(backend);
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

    [Theory, MemberData(nameof(Lengths))]
    public void VectorOps_OffsetViews_MatchReference(string backend, int length)
    {
        using var g = new GuardedTwin(backend);
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

    [Theory, MemberData(nameof(WeightedSumShapes))]
    public void WeightedSum_AnySourceCount_MatchesReference(string backend, int sources, int length)
    {
        using var g = new GuardedTwin(backend);
        var xs = Enumerable.Range(0, sources).Select(_ => g.Random(length)).ToArray();
        var weights = g.Twin.RandomValues(sources);
        var y = g.Random(length);
        g.Both((b, v) => b.WeightedSum(xs.Select(v).ToArray(), weights, v(y)));
        g.AssertClose(y, ElementTolerance, ElementTolerance, "weighted sum");
    }
}
