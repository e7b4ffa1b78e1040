using FedLora.Kernels.Reference;

namespace FedLora.Kernels.Tests;

/// <summary>
/// Every public op rejects bad arguments before any work, with an <see cref="ArgumentException"/>
/// (or a subclass) whose parameter name and message name the operand, and whose message gives the
/// shape it expected. Validation is the contract's, so it runs against every backend, Reference included.
/// </summary>
public sealed class ValidationTests
{
    public static TheoryData<string> Backends()
    {
        var data = new TheoryData<string> { "reference" };
        foreach (var name in TestBackends.Names) data.Add(name);
        return data;
    }

    /// <summary>Buffers on one backend, released together.</summary>
    private sealed class Views(Backend backend) : IDisposable
    {
        private readonly List<DeviceBuffer> _buffers = [];

        public Backend Backend { get; } = backend;

        public BufferView Of(int length)
        {
            var buffer = Backend.Allocate(length);
            _buffers.Add(buffer);
            return buffer;
        }

        public void Dispose()
        {
            foreach (var buffer in _buffers) buffer.Dispose();
        }
    }

    /// <summary>Asserts that <paramref name="act"/> throws an ArgumentException naming <paramref name="operand"/>, its message holding every fragment.</summary>
    private static void AssertRejects(Action act, string operand, params string[] fragments)
    {
        var exception = Assert.ThrowsAny<ArgumentException>(act);
        Assert.Equal(operand, exception.ParamName);
        Assert.Contains(operand, exception.Message, StringComparison.Ordinal);
        foreach (var fragment in fragments) Assert.Contains(fragment, exception.Message, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Backends))]
    public void VectorOps_BadViews_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        using var other = new ReferenceBackend();
        using var foreign = other.Allocate(4);
        var x = v.Of(4);

        AssertRejects(() => k.Allocate(-1), "length");
        AssertRejects(() => k.Upload(new float[3], x), "source", "(4)");
        AssertRejects(() => k.Download(x, new float[5]), "destination", "(4)");
        AssertRejects(() => k.Fill(foreign, 1f), "x", "lives on backend");
        AssertRejects(() => k.Copy(x, v.Of(3)), "destination", "(4)", "holds 3");
        AssertRejects(() => k.Scale(2f, foreign), "x", "lives on backend");
        AssertRejects(() => k.Axpy(1f, x, v.Of(5)), "y", "(4)", "holds 5");
        AssertRejects(() => k.WeightedSum([x, x], [1f], v.Of(4)), "weights", "(2)");
        AssertRejects(() => k.WeightedSum([x, v.Of(3)], [1f, 1f], v.Of(4)), "sources[1]", "(4)", "holds 3");
        AssertRejects(() => k.SumOfSquares(foreign), "x", "lives on backend");
    }

    [Theory, MemberData(nameof(Backends))]
    public void Views_OutsideTheirBuffer_Throw(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var x = v.Of(8);
        Assert.Throws<ArgumentOutOfRangeException>(() => x.Buffer.View(6, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => x.Buffer.View(-1, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => x.Slice(2, 7));
        // A view built by hand past the buffer's end is caught at the op's entry.
        AssertRejects(() => v.Backend.Fill(new BufferView(x.Buffer, 5, 10), 0f), "x", "[5, 15)", "8 floats");
    }

    [Theory, MemberData(nameof(Backends))]
    public void DisposedBuffer_IsRejected(string name)
    {
        var k = TestBackends.Get(name);
        var buffer = k.Allocate(3);
        buffer.Dispose();
        Assert.Throws<ObjectDisposedException>(() => k.Fill(buffer, 0f));
    }

    [Theory, MemberData(nameof(Backends))]
    public void Matmul_BadShapes_ThrowNamingOperandAndShape(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        const int n = 2, c = 3, o = 4;
        BufferView x = v.Of(n * c), w = v.Of(o * c), b = v.Of(o), y = v.Of(n * o);

        AssertRejects(() => k.MatmulForward(-1, c, o, x, w, b, y), "n", "-1");
        AssertRejects(() => k.MatmulForward(n, c, o, x, v.Of(o * c - 1), b, y), "weight", "(O,C) = (4,3) = 12", "holds 11");
        AssertRejects(() => k.MatmulForward(n, c, o, x, w, v.Of(o + 1), y), "bias", "(O) = (4)");
        AssertRejects(() => k.MatmulForward(n, c, o, x, w, null, v.Of(n * o + 1)), "output", "(N,O) = (2,4)");
        AssertRejects(() => k.MatmulBackward(n, c, o, v.Of(n * c), x, w, null, null, null), "outputGrad", "(N,O) = (2,4)");
        AssertRejects(() => k.MatmulBackward(n, c, o, y, x, w, v.Of(n * c + 1), null, null), "inputGrad", "(N,C) = (2,3)");
        AssertRejects(() => k.MatmulBackward(n, c, o, y, x, w, null, v.Of(c * o - 1), null), "weightGrad", "(O,C)");
        AssertRejects(() => k.MatmulBackward(n, c, o, y, x, w, null, null, v.Of(c)), "biasGrad", "(O) = (4)");
    }

    [Theory, MemberData(nameof(Backends))]
    public void LowRankMatmul_BadRankOrIndexSet_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        const int n = 2, c = 3, o = 4, r = 3;
        BufferView x = v.Of(n * c), w = v.Of(o * c), a = v.Of(r * c), bl = v.Of(o * r), t = v.Of(n * r), y = v.Of(n * o);

        AssertRejects(() => k.LowRankMatmulForward(n, c, o, -2, x, w, null, a, bl, 1f, null, t, y), "rank", "-2");
        AssertRejects(() => k.LowRankMatmulForward(n, c, o, r, x, w, null, a, bl, 1f, [0, 3], v.Of(n * 2), y), "rankIndices", "3", "[0, 3)");
        AssertRejects(() => k.LowRankMatmulForward(n, c, o, r, x, w, null, a, bl, 1f, [-1], v.Of(n), y), "rankIndices", "-1");
        AssertRejects(() => k.LowRankMatmulForward(n, c, o, r, x, w, null, a, bl, 1f, [1, 1], v.Of(n * 2), y), "rankIndices", "twice");
        AssertRejects(() => k.LowRankMatmulForward(n, c, o, r, x, w, null, a, bl, 1f, [0, 1, 2, 0], v.Of(n * 4), y), "rankIndices", "4 indices");
        // With I = {2, 0} (k = 2) the hidden activations are (N,k) = (2,2), not (N,r).
        AssertRejects(() => k.LowRankMatmulForward(n, c, o, r, x, w, null, a, bl, 1f, [2, 0], t, y), "loraHidden", "(N,k) = (2,2)");
        AssertRejects(() => k.LowRankMatmulForward(n, c, o, r, x, w, null, v.Of(r * c + 1), bl, 1f, null, t, y), "loraA", "(r,C) = (3,3)");
        AssertRejects(() => k.LowRankMatmulForward(n, c, o, r, x, w, null, a, v.Of(o * r - 1), 1f, null, t, y), "loraB", "(O,r) = (4,3)");
        AssertRejects(() => k.LowRankMatmulBackward(n, c, o, r, y, x, w, a, bl, 1f, [0, 0], v.Of(n * 2), null, null, null, null, null),
            "rankIndices", "twice");
        AssertRejects(() => k.LowRankMatmulBackward(n, c, o, r, y, x, w, a, bl, 1f, null, t, null, null, null, v.Of(r * c - 1), null),
            "loraAGrad", "(r,C)");
        AssertRejects(() => k.LowRankMatmulBackward(n, c, o, r, y, x, w, a, bl, 1f, null, t, null, null, null, null, v.Of(o * r + 2)),
            "loraBGrad", "(O,r)");
        AssertRejects(() => k.LowRankMatmulBackward(n, c, o, r, y, x, w, a, bl, 1f, [1], t, null, null, null, null, null),
            "loraHidden", "(N,k) = (2,1)");
    }

    [Theory, MemberData(nameof(Backends))]
    public void FederatedKernels_BadShapes_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        const int c = 3, o = 4, r = 4;
        BufferView a = v.Of(r * c), bl = v.Of(o * r);

        Assert.Throws<ArgumentNullException>(() => k.MaskedSketchUpdate(c, o, r, null!, 1f, v.Of(c), v.Of(o), a, bl));
        AssertRejects(() => k.MaskedSketchUpdate(c, o, r, [0, 2], 1f, v.Of(3 * c), v.Of(o * 2), a, bl), "subA", "(k,C) = (2,3)");
        AssertRejects(() => k.MaskedSketchUpdate(c, o, r, [0, 2], 1f, v.Of(2 * c), v.Of(o * 3), a, bl), "subB", "(O,k) = (4,2)");
        AssertRejects(() => k.MaskedSketchUpdate(c, o, r, [0, 4], 1f, v.Of(2 * c), v.Of(o * 2), a, bl), "rankIndices", "[0, 4)");
        AssertRejects(() => k.MaskedSketchUpdate(c, o, r, [3, 3], 1f, v.Of(2 * c), v.Of(o * 2), a, bl), "rankIndices", "twice");

        const int stacked = 5;
        BufferView sb = v.Of(o * stacked), sa = v.Of(stacked * c), w = v.Of(o * c);
        AssertRejects(() => k.StackedAggregation(o, c, stacked, sb, sa, new float[stacked - 1], w), "rowWeights", "(R) = (5)");
        AssertRejects(() => k.StackedAggregation(o, c, stacked, sb, v.Of(stacked * c + 1), new float[stacked], w), "stackedA", "(R,C) = (5,3)");
        AssertRejects(() => k.StackedAggregation(o, c, stacked, v.Of(o * stacked - 1), sa, new float[stacked], w), "stackedB", "(O,R) = (4,5)");
        AssertRejects(() => k.StackedAggregation(o, c, -stacked, sb, sa, new float[stacked], w), "stackedRank", "-5");
    }

    [Theory, MemberData(nameof(Backends))]
    public void LayerNormGeluResidual_BadShapes_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        const int n = 3, c = 5;
        BufferView x = v.Of(n * c), w = v.Of(c), b = v.Of(c), y = v.Of(n * c), mean = v.Of(n), rstd = v.Of(n);

        AssertRejects(() => k.LayerNormForward(n, -c, x, w, b, y, mean, rstd), "c", "-5");
        AssertRejects(() => k.LayerNormForward(n, c, x, w, b, y, v.Of(n + 1), rstd), "mean", "(N) = (3)");
        AssertRejects(() => k.LayerNormForward(n, c, x, v.Of(c - 1), b, y, mean, rstd), "weight", "(C) = (5)");
        AssertRejects(() => k.LayerNormBackward(n, c, y, x, w, mean, rstd, v.Of(n * c - 1), null, null), "inputGrad", "(N,C) = (3,5)");
        AssertRejects(() => k.LayerNormBackward(n, c, y, x, w, mean, rstd, v.Of(n * c), v.Of(c + 1), null), "weightGrad", "(C) = (5)");
        AssertRejects(() => k.LayerNormBackward(n, c, y, x, w, mean, v.Of(n - 1), v.Of(n * c), null, null), "rstd", "(N) = (3)");

        AssertRejects(() => k.GeluForward(x, v.Of(n * c - 1)), "output", $"({n * c})");
        AssertRejects(() => k.GeluBackward(x, y, v.Of(n * c + 1)), "inputGrad", $"({n * c})");
        AssertRejects(() => k.GeluBackward(x, v.Of(1), y), "outputGrad", $"({n * c})");
        AssertRejects(() => k.ResidualForward(x, v.Of(n * c - 1), y), "b", $"({n * c})");
        AssertRejects(() => k.ResidualBackward(y, x, v.Of(2)), "bGrad", $"({n * c})");
    }

    [Theory, MemberData(nameof(Backends))]
    public void Attention_BadShapes_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        const int b = 2, t = 3, c = 4, heads = 2;
        BufferView qkv = v.Of(b * t * 3 * c), att = v.Of(b * heads * t * t), y = v.Of(b * t * c);

        AssertRejects(() => k.AttentionForward(b, t, c, 3, qkv, v.Of(b * 3 * t * t), y), "heads", "C = 4", "NH = 3");
        AssertRejects(() => k.AttentionForward(-b, t, c, heads, qkv, att, y), "b", "-2");
        AssertRejects(() => k.AttentionForward(b, t, c, heads, v.Of(b * t * c), att, y), "input", "(B,T,3C) = (2,3,12)");
        AssertRejects(() => k.AttentionForward(b, t, c, heads, qkv, v.Of(b * heads * t * t - 1), y), "attention", "(B,NH,T,T) = (2,2,3,3)");
        AssertRejects(() => k.AttentionForward(b, t, c, heads, qkv, att, v.Of(b * t * c + 1)), "output", "(B,T,C) = (2,3,4)");
        AssertRejects(() => k.AttentionBackward(b, t, c, heads, qkv, att, y, v.Of(b * t * c)), "inputGrad", "(B,T,3C)");
        AssertRejects(() => k.AttentionBackward(b, t, c, heads, qkv, att, v.Of(1), v.Of(b * t * 3 * c)), "outputGrad", "(B,T,C)");
    }

    [Theory, MemberData(nameof(Backends))]
    public void Embedding_BadTokensOrTables_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        const int b = 2, t = 3, c = 4, vocab = 5;
        BufferView wte = v.Of(vocab * c), wpe = v.Of(t * c), y = v.Of(b * t * c);
        int[] tokens = [0, 1, 2, 3, 4, 0];

        AssertRejects(() => k.EmbeddingForward(b, t, c, vocab, [0, 1, 2, 3, 5, 0], wte, wpe, y), "tokens", "[4] = 5", "[0, 5)");
        AssertRejects(() => k.EmbeddingForward(b, t, c, vocab, [0, 1, -1, 3, 4, 0], wte, wpe, y), "tokens", "[2] = -1");
        AssertRejects(() => k.EmbeddingForward(b, t, c, vocab, [0, 1, 2], wte, wpe, y), "tokens", "(B*T) = 6");
        AssertRejects(() => k.EmbeddingForward(b, t, c, vocab, tokens, v.Of((vocab - 1) * c), wpe, y), "tokenTable", "(V,C) = (5,4)");
        AssertRejects(() => k.EmbeddingForward(b, t, c, vocab, tokens, wte, v.Of((t - 1) * c), y), "positionTable", "maxT >= 3");
        AssertRejects(() => k.EmbeddingForward(b, t, c, vocab, tokens, wte, v.Of(t * c + 1), y), "positionTable", "(maxT,4)");
        AssertRejects(() => k.EmbeddingBackward(b, t, c, vocab, [9, 1, 2, 3, 4, 0], y, wte, wpe), "tokens", "[0] = 9");
        AssertRejects(() => k.EmbeddingBackward(b, t, c, vocab, tokens, y, v.Of(vocab * c + 4), null), "tokenTableGrad", "(V,C)");
        AssertRejects(() => k.EmbeddingBackward(b, t, c, vocab, tokens, y, null, v.Of(c)), "positionTableGrad", "maxT >= 3");
    }

    [Theory, MemberData(nameof(Backends))]
    public void CrossEntropy_BadTargetsOrShapes_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        const int n = 3, vocab = 4;
        BufferView logits = v.Of(n * vocab), probs = v.Of(n * vocab), losses = v.Of(n);

        AssertRejects(() => k.CrossEntropyForward(n, vocab, logits, [0, 4, 1], probs, losses), "targets", "[1] = 4", "or -1 (ignored)");
        AssertRejects(() => k.CrossEntropyForward(n, vocab, logits, [0, -2, 1], probs, losses), "targets", "[1] = -2");
        AssertRejects(() => k.CrossEntropyForward(n, vocab, logits, [0, 1], probs, losses), "targets", "(B*T) = 3");
        AssertRejects(() => k.CrossEntropyForward(n, vocab, logits, [0, 1, 2], v.Of(n * vocab - 1), losses), "probabilities", "(N,V) = (3,4)");
        AssertRejects(() => k.CrossEntropyForward(n, vocab, logits, [0, 1, 2], probs, v.Of(n + 1)), "losses", "(N) = (3)");
        AssertRejects(() => k.CrossEntropyBackward(n, vocab, probs, [0, 1, 7], 1f, v.Of(n * vocab)), "targets", "[2] = 7");
        AssertRejects(() => k.CrossEntropyBackward(n, vocab, probs, [0, 1, 2], 1f, v.Of(n * vocab + 1)), "logitsGrad", "(N,V)");
        AssertRejects(() => k.CrossEntropyBackward(-n, vocab, probs, [0, 1, 2], 1f, v.Of(n * vocab)), "n", "-3");
    }

    [Theory, MemberData(nameof(Backends))]
    public void Optimizers_BadSettingsOrViews_ThrowNamingOperand(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        using var other = new ReferenceBackend();
        using var foreign = other.Allocate(6);
        const int length = 6;
        BufferView g = v.Of(length), p = v.Of(length), m = v.Of(length), s = v.Of(length);
        var settings = new AdamWSettings(LearningRate: 1e-3f);

        AssertRejects(() => k.AdamW(settings, 0, g, null, p, m, s), "timestep", "from 1");
        AssertRejects(() => k.AdamW(settings with { Beta1 = 1f }, 1, g, null, p, m, s), "Beta1", "[0, 1)");
        AssertRejects(() => k.AdamW(settings with { Epsilon = 0f }, 1, g, null, p, m, s), "Epsilon");
        AssertRejects(() => k.AdamW(settings with { LearningRate = float.NaN }, 1, g, null, p, m, s), "LearningRate");
        AssertRejects(() => k.AdamW(settings, 1, g, v.Of(length - 1), p, m, s), "mask", "(L) = (6)");
        AssertRejects(() => k.AdamW(settings, 1, g, null, p, v.Of(length + 1), s), "m", "(L) = (6)");
        AssertRejects(() => k.AdamW(settings, 1, g, null, p, m, foreign), "v", "lives on backend");
        AssertRejects(() => k.Sgd(-0.1f, 0f, g, null, p), "learningRate");
        AssertRejects(() => k.Sgd(0.1f, float.PositiveInfinity, g, null, p), "weightDecay");
        AssertRejects(() => k.Sgd(0.1f, 0f, g, v.Of(1), p), "mask", "(L) = (6)");
        AssertRejects(() => k.Sgd(0.1f, 0f, g, null, foreign), "parameters", "lives on backend");
    }

    [Theory, MemberData(nameof(Backends))]
    public void ValidEdgeCases_AreAccepted(string name)
    {
        using var v = new Views(TestBackends.Get(name));
        var k = v.Backend;
        // Ignored targets, empty shapes, a rank index set in any order, a position table longer than T.
        k.CrossEntropyForward(2, 3, v.Of(6), [-1, 2], v.Of(6), v.Of(2));
        k.CrossEntropyBackward(2, 3, v.Of(6), [-1, -1], 0.5f, v.Of(6));
        k.MatmulForward(0, 3, 4, v.Of(0), v.Of(12), null, v.Of(0));
        k.LowRankMatmulForward(1, 2, 1, 3, v.Of(2), v.Of(2), null, v.Of(6), v.Of(3), 1f, [2, 0], v.Of(2), v.Of(1));
        k.LowRankMatmulForward(1, 2, 1, 3, v.Of(2), v.Of(2), null, v.Of(6), v.Of(3), 1f, [], v.Of(0), v.Of(1));
        k.EmbeddingForward(1, 2, 3, 4, [3, 0], v.Of(12), v.Of(30), v.Of(6));
        k.AttentionForward(1, 2, 0, 2, v.Of(0), v.Of(8), v.Of(0));
        k.WeightedSum([], [], v.Of(5));
        Assert.Equal(0, k.SumOfSquares(v.Of(0)));
    }
}
