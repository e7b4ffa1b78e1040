using FedLora.Kernels.Cpu;

namespace FedLora.Kernels.Tests.Conformance;

/// <summary>
/// Layernorm, GELU, residual, attention, embedding and cross-entropy on every backend under test,
/// against the Reference on odd shapes (0, 1, 7, 17, 33, 129) and the model's shapes.
/// </summary>
public class TransformerOpsTests
{
    public static TheoryData<string, int> Lengths()
    {
        var data = new TheoryData<string, int>();
        foreach (var backend in TestBackends.Names)
        {
            for (var length = 0; length <= 67; length++) data.Add(backend, length);
            foreach (var length in new[] { 129, 1000, 65_537 }) data.Add(backend, length);
        }
        return data;
    }

    public static TheoryData<string, int, int> RowShapes()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var (n, c) in new[] { (0, 7), (1, 0), (3, 0), (1, 1), (7, 7), (7, 17), (33, 33), (17, 129), (1, 257), (128, 128), (128, 257), (130, 384) })
            {
                data.Add(backend, n, c);
            }
        }
        return data;
    }

    public static TheoryData<string, int, int, int, int> AttentionShapes()
    {
        var data = new TheoryData<string, int, int, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            // (B, T, C, NH): hs = C/NH is 1, 7, 8, 11, 17, 0 (C = 0), 16, 32 and 64; T crosses every 8-row
            // block remainder and every vector width.
            foreach (var (b, t, c, heads) in new[]
            {
                (0, 3, 4, 2), (1, 0, 4, 2), (1, 1, 1, 1), (1, 2, 2, 2), (1, 3, 7, 1), (2, 7, 7, 1), (1, 17, 33, 3), (2, 33, 17, 1),
                (1, 5, 0, 1), (1, 18, 32, 2), (1, 129, 64, 2), (2, 64, 128, 4), (1, 67, 128, 2), (1, 256, 128, 2),
                (1, 12, 24, 3), (2, 38, 16, 2),
            })
            {
                data.Add(backend, b, t, c, heads);
            }
        }
        return data;
    }

    [Theory, MemberData(nameof(RowShapes))]
    public void LayerNormForward_OddShapes_MatchesReference(string backend, int n, int c)
    {
        using var twin = new Twin(backend);
        var input = twin.Tensor(twin.RandomValues(n * c, 2f).Select(x => x + 3f).ToArray());
        var weight = twin.Random(c);
        var bias = twin.Random(c);
        var output = twin.Random(n * c);
        var mean = twin.Random(n);
        var rstd = twin.Random(n);
        twin.Run((k, s) => k.LayerNormForward(n, c, s(input), s(weight), s(bias), s(output), s(mean), s(rstd)));
        twin.AssertClose(output, 1e-5f, 1e-5f, "output");
        twin.AssertClose(mean, 1e-6f, 1e-6f, "mean");
        twin.AssertClose(rstd, 1e-6f, 1e-5f, "rstd");
    }

    [Theory, MemberData(nameof(RowShapes))]
    public void LayerNormBackward_OddShapes_AccumulatesLikeReference(string backend, int n, int c)
    {
        using var twin = new Twin(backend);
        var input = twin.Tensor(twin.RandomValues(n * c, 2f).Select(x => x - 1f).ToArray());
        var weight = twin.Random(c);
        var bias = twin.Random(c);
        var mean = twin.Zeros(n);
        var rstd = twin.Zeros(n);
        var output = twin.Zeros(n * c);
        twin.Reference.LayerNormForward(n, c, input.Reference, weight.Reference, bias.Reference, output.Reference, mean.Reference, rstd.Reference);
        // Both sides take the Reference's saved statistics, so that only the backward pass is compared.
        var savedMean = twin.Tensor(twin.Reference.ToArray(mean.Reference));
        var savedRstd = twin.Tensor(twin.Reference.ToArray(rstd.Reference));
        var outputGrad = twin.Random(n * c);
        var inputGrad = twin.Random(n * c);
        var weightGrad = twin.Random(c);
        var biasGrad = twin.Random(c);
        twin.Run((k, s) => k.LayerNormBackward(n, c, s(outputGrad), s(input), s(weight), s(savedMean), s(savedRstd), s(inputGrad),
            s(weightGrad), s(biasGrad)));
        twin.AssertClose(inputGrad, 1e-5f, 1e-4f, "inputGrad");
        twin.AssertClose(weightGrad, 1e-5f * (n + 1), 1e-5f, "weightGrad");
        twin.AssertClose(biasGrad, 1e-5f * (n + 1), 1e-5f, "biasGrad");
        // Without the parameter gradients only inputGrad moves.
        twin.Run((k, s) => k.LayerNormBackward(n, c, s(outputGrad), s(input), s(weight), s(savedMean), s(savedRstd), s(inputGrad), null, null));
        twin.AssertClose(inputGrad, 1e-5f, 1e-4f, "inputGrad (no parameter gradients)");
        twin.AssertClose(weightGrad, 1e-5f * (n + 1), 1e-5f, "weightGrad (untouched)");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void GeluForward_AnyLength_MatchesReference(string backend, int length)
    {
        using var twin = new Twin(backend);
        var values = twin.RandomValues(length, 5f);
        // The tails: where e^(-2u) overflows or vanishes, and exact zero.
        float[] specials = [0f, -0f, 9.5f, -9.5f, 10f, -10f, 40f, -40f, 1e-20f, -1e-20f];
        for (var i = 0; i < Math.Min(length, specials.Length); i++) values[length - 1 - i] = specials[i];
        var input = twin.Tensor(values);
        var output = twin.Random(length);
        twin.Run((k, s) => k.GeluForward(s(input), s(output)));
        twin.AssertClose(output, 1e-7f, 2e-6f, "gelu");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void GeluBackward_AnyLength_AccumulatesLikeReference(string backend, int length)
    {
        using var twin = new Twin(backend);
        var values = twin.RandomValues(length, 5f);
        float[] specials = [0f, 9.5f, -9.5f, 10f, -10f, 40f, -40f];
        for (var i = 0; i < Math.Min(length, specials.Length); i++) values[length - 1 - i] = specials[i];
        var input = twin.Tensor(values);
        var outputGrad = twin.Random(length);
        var inputGrad = twin.Random(length);
        twin.Run((k, s) => k.GeluBackward(s(input), s(outputGrad), s(inputGrad)));
        twin.AssertClose(inputGrad, 1e-6f, 2e-6f, "gelu backward");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void GeluBackward_OverwritingNaNs_MatchesReference(string backend, int length)
    {
        using var twin = new Twin(backend);
        var input = twin.Random(length, 5f);
        var outputGrad = twin.Random(length);
        var inputGrad = twin.NaNs(length);
        twin.Run((k, s) => k.GeluBackward(s(input), s(outputGrad), s(inputGrad), accumulate: false));
        twin.AssertClose(inputGrad, 1e-6f, 2e-6f, "gelu backward, overwriting");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void Residual_AnyLength_MatchesReferenceExactly(string backend, int length)
    {
        using var twin = new Twin(backend);
        var a = twin.Random(length);
        var b = twin.Random(length);
        var output = twin.Random(length);
        var aGrad = twin.Random(length);
        var bGrad = twin.Random(length);
        twin.Run((k, s) => k.ResidualForward(s(a), s(b), s(output)));
        twin.Run((k, s) => k.ResidualBackward(s(output), s(aGrad), s(bGrad)));
        twin.AssertClose(output, 0, 0, "residual");
        twin.AssertClose(aGrad, 0, 0, "aGrad");
        twin.AssertClose(bGrad, 0, 0, "bGrad");
    }

    [Theory, MemberData(nameof(AttentionShapes))]
    public void AttentionForward_OddShapes_MatchesReference(string backend, int b, int t, int c, int heads)
    {
        using var twin = new Twin(backend);
        var input = twin.Random(b * t * 3 * c, 2f);
        // Garbage in the attention matrix must be overwritten, above the diagonal with zeros.
        var attention = twin.Random(b * heads * t * t);
        var output = twin.Random(b * t * c);
        twin.Run((k, s) => k.AttentionForward(b, t, c, heads, s(input), s(attention), s(output)));
        twin.AssertClose(attention, 1e-6f, 1e-5f, "attention");
        twin.AssertClose(output, 1e-5f, 1e-5f, "output");
    }

    [Theory, MemberData(nameof(AttentionShapes))]
    public void AttentionBackward_OddShapes_AccumulatesOrOverwritesLikeReference(string backend, int b, int t, int c, int heads)
    {
        foreach (var accumulate in new[] { true, false })
        {
            using var twin = new Twin(backend);
            var input = twin.Random(b * t * 3 * c, 2f);
            var attention = twin.Zeros(b * heads * t * t);
            var output = twin.Zeros(b * t * c);
            twin.Reference.AttentionForward(b, t, c, heads, input.Reference, attention.Reference, output.Reference);
            var saved = twin.Tensor(twin.Reference.ToArray(attention.Reference));
            var outputGrad = twin.Random(b * t * c);
            // Overwriting starts from NaNs: an element added to, or skipped, fails.
            var inputGrad = accumulate ? twin.Random(b * t * 3 * c) : twin.NaNs(b * t * 3 * c);
            twin.Run((k, s) => k.AttentionBackward(b, t, c, heads, s(input), s(saved), s(outputGrad), s(inputGrad), accumulate));
            twin.AssertClose(inputGrad, 1e-5f, 1e-4f, accumulate ? "inputGrad" : "inputGrad, overwriting");
        }
    }

    public static TheoryData<string, int, int, int, int, int> EmbeddingShapes()
    {
        var data = new TheoryData<string, int, int, int, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            // (B, T, C, V, maxT): a vocabulary of 1 or 3 makes every token repeat; maxT > T leaves rows unread.
            foreach (var (b, t, c, vocab, maxT) in new[]
            {
                (0, 3, 7, 5, 3), (1, 0, 7, 5, 2), (2, 3, 0, 5, 3), (1, 1, 1, 1, 1), (2, 7, 17, 3, 9), (3, 33, 33, 257, 33),
                (2, 64, 128, 257, 256), (4, 40, 129, 7, 41),
            })
            {
                data.Add(backend, b, t, c, vocab, maxT);
            }
        }
        return data;
    }

    [Theory, MemberData(nameof(EmbeddingShapes))]
    public void Embedding_OddShapes_MatchesReference(string backend, int b, int t, int c, int vocab, int maxT)
    {
        using var twin = new Twin(backend);
        var tokens = Enumerable.Range(0, b * t).Select(_ => twin.Rng.Next(vocab)).ToArray();
        var tokenTable = twin.Random(vocab * c);
        var positionTable = twin.Random(maxT * c);
        var output = twin.Random(b * t * c);
        twin.Run((k, s) => k.EmbeddingForward(b, t, c, vocab, tokens, s(tokenTable), s(positionTable), s(output)));
        twin.AssertClose(output, 0, 0, "output");

        var outputGrad = twin.Random(b * t * c);
        var tokenTableGrad = twin.Random(vocab * c);
        var positionTableGrad = twin.Random(maxT * c);
        // A repeated token's rows may be summed in any order (a device may use atomics): round-off only.
        twin.Run((k, s) => k.EmbeddingBackward(b, t, c, vocab, tokens, s(outputGrad), s(tokenTableGrad), s(positionTableGrad)));
        twin.AssertClose(tokenTableGrad, 1e-6f, 1e-6f, "tokenTableGrad");
        twin.AssertClose(positionTableGrad, 1e-6f, 1e-6f, "positionTableGrad");
        twin.Run((k, s) => k.EmbeddingBackward(b, t, c, vocab, tokens, s(outputGrad), null, s(positionTableGrad)));
        twin.Run((k, s) => k.EmbeddingBackward(b, t, c, vocab, tokens, s(outputGrad), s(tokenTableGrad), null));
        twin.AssertClose(tokenTableGrad, 1e-6f, 1e-6f, "tokenTableGrad (second call)");
        twin.AssertClose(positionTableGrad, 1e-6f, 1e-6f, "positionTableGrad (second call)");
    }

    [Theory, MemberData(nameof(RowShapes))]
    public void CrossEntropy_OddShapesWithIgnoredTargets_MatchesReference(string backend, int n, int vocab)
    {
        using var twin = new Twin(backend);
        // Every third target is ignored; with V = 0 every target must be.
        var targets = Enumerable.Range(0, n).Select(i => vocab == 0 || i % 3 == 2 ? -1 : twin.Rng.Next(vocab)).ToArray();
        var logits = twin.Random(n * vocab, 6f);
        var probabilities = twin.Random(n * vocab);
        var losses = twin.Random(n);
        twin.Run((k, s) => k.CrossEntropyForward(n, vocab, s(logits), targets, s(probabilities), s(losses)));
        twin.AssertClose(probabilities, 1e-7f, 1e-5f, "probabilities");
        twin.AssertClose(losses, 1e-5f, 1e-5f, "losses");
        for (var i = 0; i < n; i++)
        {
            if (targets[i] < 0) Assert.Equal(0f, twin.Device.ToArray(losses.Device.Slice(i, 1))[0]);
        }

        var saved = twin.Tensor(twin.Reference.ToArray(probabilities.Reference));
        var logitsGrad = twin.Random(n * vocab);
        var before = twin.Device.ToArray(logitsGrad.Device);
        var lossScale = 1f / Math.Max(1, n);
        twin.Run((k, s) => k.CrossEntropyBackward(n, vocab, s(saved), targets, lossScale, s(logitsGrad)));
        twin.AssertClose(logitsGrad, 1e-7f, 1e-6f, "logitsGrad");
        var after = twin.Device.ToArray(logitsGrad.Device);
        for (var i = 0; i < n; i++)
        {
            if (targets[i] >= 0) continue;
            Twin.AssertClose(before.AsSpan(i * vocab, vocab), after.AsSpan(i * vocab, vocab), 0, 0, $"ignored row {i} untouched");
        }

        // Overwriting writes every row, the ignored ones with zeros.
        var overwritten = twin.NaNs(n * vocab);
        twin.Run((k, s) => k.CrossEntropyBackward(n, vocab, s(saved), targets, lossScale, s(overwritten), accumulate: false));
        twin.AssertClose(overwritten, 1e-7f, 1e-6f, "logitsGrad, overwriting");
        var written = twin.Device.ToArray(overwritten.Device);
        for (var i = 0; i < n; i++)
        {
            if (targets[i] >= 0) continue;
            Twin.AssertClose(new float[vocab], written.AsSpan(i * vocab, vocab), 0, 0, $"ignored row {i} zeroed");
        }
    }

    [Theory, MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void AllOps_WindowsOfOneBuffer_WriteOnlyTheirOutputs(string backend)
    {
        // As in a model, every operand is a window at an odd offset of one buffer, with gaps between
        // them: the whole buffer, gaps included, must end as the Reference's does.
        using var twin = new Twin(backend);
        const int b = 2, t = 9, c = 12, heads = 3, n = b * t, vocab = 11, length = 37;
        var offsets = new List<(int Offset, int Length)>();
        var end = 5;
        int Take(int size)
        {
            offsets.Add((end, size));
            end += size + 3;
            return offsets.Count - 1;
        }
        int x = Take(n * c), w = Take(c), bias = Take(c), y = Take(n * c), mean = Take(n), rstd = Take(n), dy = Take(n * c), dx = Take(n * c),
            dw = Take(c), db = Take(c), qkv = Take(n * 3 * c), att = Take(b * heads * t * t), ao = Take(n * c), dqkv = Take(n * 3 * c),
            wte = Take(vocab * c), wpe = Take(t * c), dwte = Take(vocab * c), dwpe = Take(t * c), logits = Take(n * vocab),
            probs = Take(n * vocab), losses = Take(n), dlogits = Take(n * vocab), v1 = Take(length), v2 = Take(length), v3 = Take(length),
            mask = Take(length), m = Take(length), v = Take(length);
        var all = twin.Random(end + 4);
        BufferView At(Backend k, int operand)
        {
            var whole = ReferenceEquals(k, twin.Reference) ? all.Reference : all.Device;
            return whole.Slice(offsets[operand].Offset, offsets[operand].Length);
        }
        var tokens = Enumerable.Range(0, n).Select(i => (i * 7) % vocab).ToArray();
        var targets = Enumerable.Range(0, n).Select(i => i % 4 == 3 ? -1 : (i * 5) % vocab).ToArray();
        foreach (var k in new[] { twin.Reference, twin.Device })
        {
            BufferView V(int operand) => At(k, operand);
            k.LayerNormForward(n, c, V(x), V(w), V(bias), V(y), V(mean), V(rstd));
            k.LayerNormBackward(n, c, V(dy), V(x), V(w), V(mean), V(rstd), V(dx), V(dw), V(db));
            k.AttentionForward(b, t, c, heads, V(qkv), V(att), V(ao));
            k.AttentionBackward(b, t, c, heads, V(qkv), V(att), V(dy), V(dqkv));
            k.EmbeddingForward(b, t, c, vocab, tokens, V(wte), V(wpe), V(y));
            k.EmbeddingBackward(b, t, c, vocab, tokens, V(dy), V(dwte), V(dwpe));
            k.CrossEntropyForward(n, vocab, V(logits), targets, V(probs), V(losses));
            k.CrossEntropyBackward(n, vocab, V(probs), targets, 0.5f, V(dlogits));
            k.GeluForward(V(v1), V(v2));
            k.GeluBackward(V(v1), V(v2), V(v3));
            k.ResidualForward(V(v1), V(v3), V(v2));
            k.ResidualBackward(V(v2), V(v1), V(v3));
            k.Axpy(0.25f, V(v1), V(v2));
            k.Scale(1.5f, V(v3));
            k.WeightedSum([V(v1), V(v2)], [0.5f, 2f], V(m));
            k.AdamW(new AdamWSettings(LearningRate: 0.01f), 1, V(v1), V(mask), V(v2), V(m), V(v));
            k.Sgd(0.1f, 0.01f, V(v3), V(mask), V(v1));
            k.Copy(V(v1), V(v3));
            k.Fill(V(mask), 2f);
        }
        twin.AssertClose(all, 1e-4f, 1e-4f, "the whole buffer");
        Assert.Equal(twin.Reference.SumOfSquares(At(twin.Reference, v3)), twin.Device.SumOfSquares(At(twin.Device, v3)), 5);
    }

    [Fact]
    public void CpuOps_SteadyState_AllocateNothingOnTheCallingThread()
    {
        // The hot path allocates nothing: scratch is per thread, grown once and reused, and the
        // validation formats its messages only when it throws.
        var k = TestBackends.Get("cpu");
        const int b = 2, t = 33, c = 64, heads = 4, n = b * t, vocab = 257, length = 70_001;
        using var x = k.Allocate(n * c);
        using var w = k.Allocate(c);
        using var y = k.Allocate(n * c);
        using var stats = k.Allocate(2 * n);
        using var qkv = k.Allocate(n * 3 * c);
        using var att = k.Allocate(b * heads * t * t);
        using var wte = k.Allocate(vocab * c);
        using var logits = k.Allocate(n * vocab);
        using var probs = k.Allocate(n * vocab);
        using var v1 = k.Allocate(length);
        using var v2 = k.Allocate(length);
        using var v3 = k.Allocate(length);
        var tokens = Enumerable.Range(0, n).Select(i => i % vocab).ToArray();
        BufferView[] sources = [v1, v2];
        float[] weights = [0.5f, 0.5f];
        var settings = new AdamWSettings(LearningRate: 1e-3f);
        var host = new float[length];
        BufferView mean = stats.View(0, n), rstd = stats.View(n, n), losses = stats.View(0, n);
        void RunAll()
        {
            k.LayerNormForward(n, c, x, w, w, y, mean, rstd);
            k.LayerNormBackward(n, c, y, x, w, mean, rstd, x, w, w);
            k.AttentionForward(b, t, c, heads, qkv, att, y);
            k.AttentionBackward(b, t, c, heads, qkv, att, y, qkv);
            k.EmbeddingForward(b, t, c, vocab, tokens, wte, wte.View(0, t * c), y);
            k.EmbeddingBackward(b, t, c, vocab, tokens, y, wte, null);
            k.CrossEntropyForward(n, vocab, logits, tokens, probs, losses);
            k.CrossEntropyBackward(n, vocab, probs, tokens, 1f, logits);
            k.GeluForward(v1, v2);
            k.GeluBackward(v1, v2, v3);
            k.ResidualForward(v1, v2, v3);
            k.ResidualBackward(v3, v1, v2);
            k.Fill(v1, 0.5f);
            k.Copy(v1, v2);
            k.Scale(2f, v2);
            k.Axpy(0.5f, v1, v2);
            k.WeightedSum(sources, weights, v3);
            k.SumOfSquares(v3);
            k.AdamW(settings, 1, v1, v2, v3, v1, v2);
            k.Sgd(0.1f, 0f, v1, v2, v3);
            k.Upload(host, v1);
            k.Download(v2, host);
        }
        RunAll();
        RunAll();
        var before = GC.GetAllocatedBytesForCurrentThread();
        RunAll();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void SimdExp_CurrentWidth_WithinTwoUlpsAndExactAtSpecials()
    {
        // The exp behind softmax, cross-entropy and GELU, at the width FEDLORA_SIMD selects.
        var values = new List<float> { 0f, -0f, 1f, -1f, 88.7f, 88.8f, -87.3f, -100f, -103.9f, -104f, -1000f, 1000f };
        for (var x = -110f; x <= 90f; x += 0.0137f) values.Add(x);
        values.AddRange([float.NegativeInfinity, float.PositiveInfinity, float.NaN]);
        var input = values.ToArray();
        var output = new float[input.Length];
        Simd.Exp(input, output);
        for (var i = 0; i < input.Length; i++)
        {
            var expected = (float)Math.Exp(input[i]);
            if (float.IsNaN(input[i]))
            {
                Assert.True(float.IsNaN(output[i]), $"exp(NaN) = {output[i]}");
                continue;
            }
            // Two ulps of the exact result (1.01 measured); below float's normal range, the denormal spacing.
            var tolerance = Math.Max(2 * ((double)MathF.BitIncrement(expected) - expected), 2 * float.Epsilon);
            if (float.IsInfinity(expected) || expected == 0f) Assert.True(output[i] == expected, $"exp({input[i]:R}) = {output[i]:R}, expected {expected:R}");
            else Assert.True(Math.Abs(output[i] - Math.Exp(input[i])) <= tolerance, $"exp({input[i]:R}) = {output[i]:R}, expected {Math.Exp(input[i]):R}");
        }
    }

    [Fact]
    public void SimdExpFlushToZero_CurrentWidth_WithinTwoUlpsAndZeroBelowFloatRange()
    {
        // The softmax's and GELU's exp (arguments x - max <= 0, GELU's -2u <= 88), at the width FEDLORA_SIMD selects.
        var values = new List<float> { 0f, -0f, 1f, 80f, 87.9f, 88f, -1f, -87f, -87.3f, -88f, -88.1f, -100f, -1000f };
        for (var x = -110f; x <= 88f; x += 0.0137f) values.Add(x);
        values.AddRange([float.NegativeInfinity, float.NaN]);
        var input = values.ToArray();
        var output = new float[input.Length];
        Simd.ExpFlushToZero(input, output);
        for (var i = 0; i < input.Length; i++)
        {
            var exact = Math.Exp(input[i]);
            var message = $"exp({input[i]:R}) = {output[i]:R}, expected {exact:R}";
            if (float.IsNaN(input[i])) Assert.True(float.IsNaN(output[i]), message);
            // Below float's normal range (e^-87.34) the result may flush to 0: an error under 2^-126.
            else if (exact < 1.2e-38) Assert.True(output[i] >= 0f && Math.Abs(output[i] - exact) < 1.2e-38, message);
            else Assert.True(Math.Abs(output[i] - exact) <= 2 * ((double)MathF.BitIncrement((float)exact) - (float)exact), message);
        }
    }
}

/// <summary>Runs one op on both sides of a <see cref="Twin"/>: the side selector maps a twin tensor to that side's view.</summary>
internal static class TwinExtensions
{
    public static void Run(this Twin twin, Action<Backend, Func<TwinTensor, BufferView>> op)
    {
        op(twin.Reference, tensor => tensor.Reference);
        op(twin.Device, tensor => tensor.Device);
    }
}
