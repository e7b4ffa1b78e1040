using System.Globalization;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels.Tests;

/// <summary>
/// Finite-difference checks of every backward op of the Reference backend against its own forward
/// op: for a random linear functional L = sum(g * forward(x)), the analytic gradient the backward op
/// accumulates (into zeros) must match central differences of L in every element of every input.
/// These establish that the Reference, the truth the fast backends are tested against, is right.
/// </summary>
/// <remarks>
/// The forward ops store float32 outputs, so L carries rounding noise of about 1e-7 |L|: the
/// differences use steps of 1e-2 with Richardson extrapolation (4 D(h/2) - D(h)) / 3, which removes
/// the h^2 error term, and L is summed in double. Every input is O(1), so absolute steps suffice.
/// </remarks>
public sealed class GradientCheckTests : IDisposable
{
    private const double Step = 1e-2;
    private readonly ReferenceBackend _backend = new();
    private readonly List<DeviceBuffer> _buffers = [];

    public void Dispose()
    {
        foreach (var buffer in _buffers) buffer.Dispose();
        _backend.Dispose();
    }

    private BufferView Up(float[] values)
    {
        var buffer = _backend.Allocate(values.Length);
        _buffers.Add(buffer);
        _backend.Upload(values, buffer);
        return buffer;
    }

    private BufferView Zeros(int length) => Up(new float[length]);

    private float[] Down(BufferView view) => _backend.ToArray(view);

    private static float[] RandomValues(Random rng, int length, float scale = 1f)
    {
        var values = new float[length];
        for (var i = 0; i < length; i++) values[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return values;
    }

    /// <summary>
    /// Checks the gradient of L = sum(g * forward(inputs)) with respect to every element of every
    /// input named in <paramref name="names"/>. <paramref name="forward"/> maps inputs to the output
    /// g weighs; <paramref name="backward"/> maps inputs and g to one gradient per input.
    /// </summary>
    private static void CheckGradients(string op, string[] names, float[][] inputs, Func<float[][], float[]> forward,
        Func<float[][], float[], float[][]> backward, Random rng, double abs = 2e-4, double rel = 1e-3)
    {
        var g = RandomValues(rng, forward(inputs).Length);
        double Loss(float[][] x)
        {
            var y = forward(x);
            double sum = 0;
            for (var i = 0; i < y.Length; i++) sum += (double)g[i] * y[i];
            return sum;
        }
        double Difference(float[] x, int i, double h)
        {
            var original = x[i];
            x[i] = (float)(original + h);
            var upStep = (double)x[i] - original;
            var up = Loss(inputs);
            x[i] = (float)(original - h);
            var downStep = original - (double)x[i];
            var down = Loss(inputs);
            x[i] = original;
            return (up - down) / (upStep + downStep);
        }

        var analytic = backward(inputs, g);
        Assert.Equal(inputs.Length, analytic.Length);
        for (var t = 0; t < inputs.Length; t++)
        {
            Assert.Equal(inputs[t].Length, analytic[t].Length);
            for (var i = 0; i < inputs[t].Length; i++)
            {
                var numeric = (4 * Difference(inputs[t], i, Step / 2) - Difference(inputs[t], i, Step)) / 3;
                var error = Math.Abs(analytic[t][i] - numeric);
                Assert.True(error <= abs + rel * Math.Abs(numeric), string.Create(CultureInfo.InvariantCulture,
                    $"{op}: d L / d {names[t]}[{i}] is {analytic[t][i]:R} by the backward op, {numeric:R} by finite differences (|diff| {error:G3})"));
            }
        }
    }

    public static TheoryData<int> Seeds() => [1, 2, 3];

    [Theory, MemberData(nameof(Seeds))]
    public void MatmulBackward_WithBias_MatchesFiniteDifferences(int seed)
    {
        var rng = new Random(seed);
        int n = rng.Next(1, 5), c = rng.Next(1, 6), o = rng.Next(1, 5);
        CheckGradients("matmul", ["input", "weight", "bias"],
            [RandomValues(rng, n * c), RandomValues(rng, o * c), RandomValues(rng, o)],
            x =>
            {
                var y = Zeros(n * o);
                _backend.MatmulForward(n, c, o, Up(x[0]), Up(x[1]), Up(x[2]), y);
                return Down(y);
            },
            (x, g) =>
            {
                BufferView dx = Zeros(n * c), dw = Zeros(o * c), db = Zeros(o);
                _backend.MatmulBackward(n, c, o, Up(g), Up(x[0]), Up(x[1]), dx, dw, db);
                return [Down(dx), Down(dw), Down(db)];
            }, rng);
    }

    public static TheoryData<int, bool> LowRankCases() => new() { { 1, false }, { 2, true }, { 3, true }, { 4, false } };

    [Theory, MemberData(nameof(LowRankCases))]
    public void LowRankMatmulBackward_AllGradients_MatchFiniteDifferences(int seed, bool withIndexSet)
    {
        var rng = new Random(seed);
        int n = rng.Next(1, 4), c = rng.Next(1, 5), o = rng.Next(1, 4), rank = rng.Next(2, 5);
        // A shuffled proper subset of the ranks: the other rows of A and columns of B must get no gradient.
        int[]? indices = withIndexSet ? Enumerable.Range(0, rank).OrderBy(_ => rng.Next()).Take(rank - 1).ToArray() : null;
        var k = indices?.Length ?? rank;
        var scale = 1.5f;
        CheckGradients($"low-rank matmul (I = {(indices is null ? "all" : string.Join(",", indices))})",
            ["input", "weight", "bias", "loraA", "loraB"],
            [RandomValues(rng, n * c), RandomValues(rng, o * c), RandomValues(rng, o), RandomValues(rng, rank * c), RandomValues(rng, o * rank)],
            x =>
            {
                var y = Zeros(n * o);
                _backend.LowRankMatmulForward(n, c, o, rank, Up(x[0]), Up(x[1]), Up(x[2]), Up(x[3]), Up(x[4]), scale, indices, Zeros(n * k), y);
                return Down(y);
            },
            (x, g) =>
            {
                var hidden = Zeros(n * k);
                BufferView input = Up(x[0]), weight = Up(x[1]), a = Up(x[3]), b = Up(x[4]);
                _backend.LowRankMatmulForward(n, c, o, rank, input, weight, Up(x[2]), a, b, scale, indices, hidden, Zeros(n * o));
                BufferView dx = Zeros(n * c), dw = Zeros(o * c), db = Zeros(o), da = Zeros(rank * c), dbl = Zeros(o * rank);
                _backend.LowRankMatmulBackward(n, c, o, rank, Up(g), input, weight, a, b, scale, indices, hidden, dx, dw, db, da, dbl);
                return [Down(dx), Down(dw), Down(db), Down(da), Down(dbl)];
            }, rng);
    }

    [Theory, MemberData(nameof(Seeds))]
    public void LayerNormBackward_AllGradients_MatchFiniteDifferences(int seed)
    {
        var rng = new Random(seed);
        int n = rng.Next(1, 4), c = rng.Next(3, 8);
        CheckGradients("layernorm", ["input", "weight", "bias"],
            [RandomValues(rng, n * c, 2f), RandomValues(rng, c), RandomValues(rng, c)],
            x =>
            {
                var y = Zeros(n * c);
                _backend.LayerNormForward(n, c, Up(x[0]), Up(x[1]), Up(x[2]), y, Zeros(n), Zeros(n));
                return Down(y);
            },
            (x, g) =>
            {
                BufferView input = Up(x[0]), weight = Up(x[1]), mean = Zeros(n), rstd = Zeros(n);
                _backend.LayerNormForward(n, c, input, weight, Up(x[2]), Zeros(n * c), mean, rstd);
                BufferView dx = Zeros(n * c), dw = Zeros(c), db = Zeros(c);
                _backend.LayerNormBackward(n, c, Up(g), input, weight, mean, rstd, dx, dw, db);
                return [Down(dx), Down(dw), Down(db)];
            }, rng);
    }

    [Theory, MemberData(nameof(Seeds))]
    public void GeluBackward_MatchesFiniteDifferences(int seed)
    {
        var rng = new Random(seed);
        var length = rng.Next(5, 20);
        CheckGradients("gelu", ["input"], [RandomValues(rng, length, 4f)],
            x =>
            {
                var y = Zeros(length);
                _backend.GeluForward(Up(x[0]), y);
                return Down(y);
            },
            (x, g) =>
            {
                var dx = Zeros(length);
                _backend.GeluBackward(Up(x[0]), Up(g), dx);
                return [Down(dx)];
            }, rng);
    }

    [Theory, MemberData(nameof(Seeds))]
    public void ResidualBackward_MatchesFiniteDifferences(int seed)
    {
        var rng = new Random(seed);
        var length = rng.Next(1, 10);
        CheckGradients("residual", ["a", "b"], [RandomValues(rng, length), RandomValues(rng, length)],
            x =>
            {
                var y = Zeros(length);
                _backend.ResidualForward(Up(x[0]), Up(x[1]), y);
                return Down(y);
            },
            (x, g) =>
            {
                BufferView da = Zeros(length), db = Zeros(length);
                _backend.ResidualBackward(Up(g), da, db);
                return [Down(da), Down(db)];
            }, rng);
    }

    [Theory, MemberData(nameof(Seeds))]
    public void AttentionBackward_MatchesFiniteDifferences(int seed)
    {
        var rng = new Random(seed);
        int b = rng.Next(1, 3), t = rng.Next(2, 6), heads = rng.Next(1, 3), c = heads * rng.Next(1, 4);
        CheckGradients("attention", ["input (q, k, v)"], [RandomValues(rng, b * t * 3 * c, 1.5f)],
            x =>
            {
                var y = Zeros(b * t * c);
                _backend.AttentionForward(b, t, c, heads, Up(x[0]), Zeros(b * heads * t * t), y);
                return Down(y);
            },
            (x, g) =>
            {
                BufferView input = Up(x[0]), attention = Zeros(b * heads * t * t), dx = Zeros(b * t * 3 * c);
                _backend.AttentionForward(b, t, c, heads, input, attention, Zeros(b * t * c));
                _backend.AttentionBackward(b, t, c, heads, input, attention, Up(g), dx);
                return [Down(dx)];
            }, rng);
    }

    [Theory, MemberData(nameof(Seeds))]
    public void EmbeddingBackward_MatchesFiniteDifferences(int seed)
    {
        var rng = new Random(seed);
        int b = rng.Next(1, 3), t = rng.Next(1, 4), c = rng.Next(1, 4), vocab = rng.Next(1, 4), maxT = t + rng.Next(0, 2);
        var tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(vocab)).ToArray();
        CheckGradients("embedding", ["tokenTable", "positionTable"], [RandomValues(rng, vocab * c), RandomValues(rng, maxT * c)],
            x =>
            {
                var y = Zeros(b * t * c);
                _backend.EmbeddingForward(b, t, c, vocab, tokens, Up(x[0]), Up(x[1]), y);
                return Down(y);
            },
            (x, g) =>
            {
                BufferView dwte = Zeros(vocab * c), dwpe = Zeros(maxT * c);
                _backend.EmbeddingBackward(b, t, c, vocab, tokens, Up(g), dwte, dwpe);
                return [Down(dwte), Down(dwpe)];
            }, rng);
    }

    [Theory, MemberData(nameof(Seeds))]
    public void CrossEntropyBackward_WithIgnoredTargets_MatchesFiniteDifferences(int seed)
    {
        var rng = new Random(seed);
        int n = rng.Next(2, 5), vocab = rng.Next(2, 7);
        // Row 1 is ignored: it adds nothing to the loss, so its logits must get no gradient.
        var targets = Enumerable.Range(0, n).Select(i => i == 1 ? -1 : rng.Next(vocab)).ToArray();
        const float lossScale = 0.75f;
        // The backward op takes one scale for every row: d L / d losses[i] = lossScale, i.e. L = lossScale * sum(losses).
        var logits = RandomValues(rng, n * vocab, 3f);
        CheckGradients("cross-entropy", ["logits"], [logits],
            x =>
            {
                var losses = Zeros(n);
                _backend.CrossEntropyForward(n, vocab, Up(x[0]), targets, Zeros(n * vocab), losses);
                return Down(losses);
            },
            (x, g) =>
            {
                var probabilities = Zeros(n * vocab);
                _backend.CrossEntropyForward(n, vocab, Up(x[0]), targets, probabilities, Zeros(n));
                var dz = Zeros(n * vocab);
                _backend.CrossEntropyBackward(n, vocab, probabilities, targets, 1f, dz);
                // Per-row weights g[i] come from the functional; the op's single lossScale is exercised below.
                var gradient = Down(dz);
                for (var i = 0; i < n; i++)
                {
                    for (var v = 0; v < vocab; v++) gradient[i * vocab + v] *= g[i];
                }
                return [gradient];
            }, rng);

        // lossScale multiplies the gradient exactly.
        var p = Zeros(n * vocab);
        _backend.CrossEntropyForward(n, vocab, Up(logits), targets, p, Zeros(n));
        BufferView unit = Zeros(n * vocab), scaled = Zeros(n * vocab);
        _backend.CrossEntropyBackward(n, vocab, p, targets, 1f, unit);
        _backend.CrossEntropyBackward(n, vocab, p, targets, lossScale, scaled);
        var expected = Down(unit).Select(d => d * lossScale).ToArray();
        Twin.AssertClose(expected, Down(scaled), 1e-7f, 1e-6f, "cross-entropy lossScale");
    }
}
