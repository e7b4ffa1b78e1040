namespace FedLora.Kernels.Tests.Ilgpu;

/// <summary>
/// One training step of a one-block GPT with a LoRA adapter on its qkv projection, laid out as llm.c
/// lays out a model: every parameter a view of one buffer, every gradient a view of another, every
/// activation a view of a third. Run on the Reference and on ILGPU's CPU accelerator from the same values, it checks
/// the ops together: views at arbitrary offsets, the order of queued launches, accumulation into
/// shared gradients (the tied embedding, the residual stream), and the masked AdamW step.
/// </summary>
public class IlgpuTrainingStepTests
{
    private const int B = 2, T = 7, C = 12, Heads = 3, V = 17, Rank = 4;
    private static readonly int[] RankIndices = [3, 1];
    private const float LoraScale = 2f;

    [Fact]
    public void TinyGptStep_OneBlockWithLora_MatchesReference()
    {
        using var twin = new Twin("ilgpu-cpu", seed: 99);
        var device = twin.Device;
        var parameters = new Layout();
        var wte = parameters.Add(V * C);
        var wpe = parameters.Add(T * C);
        var ln1w = parameters.Add(C);
        var ln1b = parameters.Add(C);
        var wqkv = parameters.Add(3 * C * C);
        var bqkv = parameters.Add(3 * C);
        var loraA = parameters.Add(Rank * C);
        var loraB = parameters.Add(3 * C * Rank);
        var wproj = parameters.Add(C * C);
        var bproj = parameters.Add(C);
        var ln2w = parameters.Add(C);
        var ln2b = parameters.Add(C);
        var wfc = parameters.Add(4 * C * C);
        var bfc = parameters.Add(4 * C);
        var wfcproj = parameters.Add(C * 4 * C);
        var bfcproj = parameters.Add(C);
        var lnfw = parameters.Add(C);
        var lnfb = parameters.Add(C);

        const int n = B * T;
        var k = RankIndices.Length;
        var acts = new Layout();
        var x0 = acts.Add(n * C);
        var ln1 = acts.Add(n * C);
        var m1 = acts.Add(n);
        var r1 = acts.Add(n);
        var hidden = acts.Add(n * k);
        var qkv = acts.Add(n * 3 * C);
        var att = acts.Add(B * Heads * T * T);
        var atty = acts.Add(n * C);
        var proj = acts.Add(n * C);
        var res1 = acts.Add(n * C);
        var ln2 = acts.Add(n * C);
        var m2 = acts.Add(n);
        var r2 = acts.Add(n);
        var fc = acts.Add(n * 4 * C);
        var ge = acts.Add(n * 4 * C);
        var fcproj = acts.Add(n * C);
        var res2 = acts.Add(n * C);
        var lnf = acts.Add(n * C);
        var mf = acts.Add(n);
        var rf = acts.Add(n);
        var logits = acts.Add(n * V);
        var probs = acts.Add(n * V);
        var losses = acts.Add(n);

        var initial = twin.RandomValues(parameters.Length, 0.5f);
        // Layernorm gains near 1 and B = 0 at start would hide the adapter: use random B, gains 1 + noise.
        foreach (var gain in new[] { ln1w, ln2w, lnfw })
        {
            for (var i = 0; i < gain.Length; i++) initial[gain.Offset + i] += 1f;
        }
        // Train the adapter and the layernorms only (a LoRA fine-tuning step): mask 1 there, 0 elsewhere.
        var mask = new float[parameters.Length];
        foreach (var trainable in new[] { loraA, loraB, ln1w, ln1b, ln2w, ln2b, lnfw, lnfb }) Array.Fill(mask, 1f, trainable.Offset, trainable.Length);
        var tokens = Enumerable.Range(0, n).Select(_ => twin.Rng.Next(V)).ToArray();
        var targets = Enumerable.Range(0, n).Select(i => i % 4 == 2 ? -1 : twin.Rng.Next(V)).ToArray();
        var counted = targets.Count(t => t >= 0);

        var sides = new[] { twin.Reference, device }.Select(backend =>
        {
            var p = backend.Allocate(parameters.Length);
            backend.Upload(initial, p);
            var keep = backend.Allocate(parameters.Length);
            backend.Upload(mask, keep);
            return (Backend: backend, Params: p, Grads: backend.Allocate(parameters.Length), Mask: keep,
                M: backend.Allocate(parameters.Length), V: backend.Allocate(parameters.Length),
                Acts: backend.Allocate(acts.Length), Dacts: backend.Allocate(acts.Length));
        }).ToArray();

        var norms = new double[2];
        for (var s = 0; s < 2; s++)
        {
            var (backend, pb, gb, keep, mb, vb, ab, db) = sides[s];
            BufferView P(Slot slot) => pb.View(slot.Offset, slot.Length);
            BufferView G(Slot slot) => gb.View(slot.Offset, slot.Length);
            BufferView A(Slot slot) => ab.View(slot.Offset, slot.Length);
            BufferView D(Slot slot) => db.View(slot.Offset, slot.Length);

            backend.EmbeddingForward(B, T, C, V, tokens, P(wte), P(wpe), A(x0));
            backend.LayerNormForward(n, C, A(x0), P(ln1w), P(ln1b), A(ln1), A(m1), A(r1));
            backend.LowRankMatmulForward(n, C, 3 * C, Rank, A(ln1), P(wqkv), P(bqkv), P(loraA), P(loraB), LoraScale, RankIndices, A(hidden), A(qkv));
            backend.AttentionForward(B, T, C, Heads, A(qkv), A(att), A(atty));
            backend.MatmulForward(n, C, C, A(atty), P(wproj), P(bproj), A(proj));
            backend.ResidualForward(A(x0), A(proj), A(res1));
            backend.LayerNormForward(n, C, A(res1), P(ln2w), P(ln2b), A(ln2), A(m2), A(r2));
            backend.MatmulForward(n, C, 4 * C, A(ln2), P(wfc), P(bfc), A(fc));
            backend.GeluForward(A(fc), A(ge));
            backend.MatmulForward(n, 4 * C, C, A(ge), P(wfcproj), P(bfcproj), A(fcproj));
            backend.ResidualForward(A(res1), A(fcproj), A(res2));
            backend.LayerNormForward(n, C, A(res2), P(lnfw), P(lnfb), A(lnf), A(mf), A(rf));
            backend.MatmulForward(n, C, V, A(lnf), P(wte), null, A(logits));
            backend.CrossEntropyForward(n, V, A(logits), targets, A(probs), A(losses));

            backend.CrossEntropyBackward(n, V, A(probs), targets, 1f / counted, D(logits));
            backend.MatmulBackward(n, C, V, D(logits), A(lnf), P(wte), D(lnf), G(wte), null);
            backend.LayerNormBackward(n, C, D(lnf), A(res2), P(lnfw), A(mf), A(rf), D(res2), G(lnfw), G(lnfb));
            backend.ResidualBackward(D(res2), D(res1), D(fcproj));
            backend.MatmulBackward(n, 4 * C, C, D(fcproj), A(ge), P(wfcproj), D(ge), G(wfcproj), G(bfcproj));
            backend.GeluBackward(A(fc), D(ge), D(fc));
            backend.MatmulBackward(n, C, 4 * C, D(fc), A(ln2), P(wfc), D(ln2), G(wfc), G(bfc));
            backend.LayerNormBackward(n, C, D(ln2), A(res1), P(ln2w), A(m2), A(r2), D(res1), G(ln2w), G(ln2b));
            backend.ResidualBackward(D(res1), D(x0), D(proj));
            backend.MatmulBackward(n, C, C, D(proj), A(atty), P(wproj), D(atty), G(wproj), G(bproj));
            backend.AttentionBackward(B, T, C, Heads, A(qkv), A(att), D(atty), D(qkv));
            // The base qkv weight is frozen: no weight or bias gradient, only the adapter's and the input's.
            backend.LowRankMatmulBackward(n, C, 3 * C, Rank, D(qkv), A(ln1), P(wqkv), P(loraA), P(loraB), LoraScale, RankIndices, A(hidden),
                D(ln1), null, null, G(loraA), G(loraB));
            backend.LayerNormBackward(n, C, D(ln1), A(x0), P(ln1w), A(m1), A(r1), D(x0), G(ln1w), G(ln1b));
            backend.EmbeddingBackward(B, T, C, V, tokens, D(x0), G(wte), G(wpe));

            norms[s] = backend.SumOfSquares(gb);
            backend.AdamW(new AdamWSettings(LearningRate: 1e-2f, WeightDecay: 0.01f), 1, gb, keep, pb, mb, vb);
        }

        var (reference, ilgpu) = (sides[0], sides[1]);
        Twin.AssertClose(reference.Backend.ToArray(reference.Acts), ilgpu.Backend.ToArray(ilgpu.Acts), 1e-4f, 1e-3f, "ilgpu-cpu: activations");
        Twin.AssertClose(reference.Backend.ToArray(reference.Dacts), ilgpu.Backend.ToArray(ilgpu.Dacts), 1e-4f, 1e-3f, "ilgpu-cpu: activation gradients");
        Twin.AssertClose(reference.Backend.ToArray(reference.Grads), ilgpu.Backend.ToArray(ilgpu.Grads), 1e-4f, 1e-3f, "ilgpu-cpu: parameter gradients");
        Twin.AssertClose(reference.Backend.ToArray(reference.Params), ilgpu.Backend.ToArray(ilgpu.Params), 1e-5f, 1e-4f, "ilgpu-cpu: parameters after AdamW");
        Assert.True(Math.Abs(norms[0] - norms[1]) <= 1e-4 * norms[0], $"gradient norm^2 {norms[1]}, expected {norms[0]}");
        // The step must have moved the adapter (a vacuous comparison would pass too).
        var moved = reference.Backend.ToArray(reference.Params.View(loraA.Offset, loraA.Length));
        Assert.NotEqual(initial.AsSpan(loraA.Offset, loraA.Length).ToArray(), moved);

        foreach (var side in sides)
        {
            foreach (var buffer in new[] { side.Params, side.Grads, side.Mask, side.M, side.V, side.Acts, side.Dacts }) buffer.Dispose();
        }
    }

    private readonly record struct Slot(int Offset, int Length);

    /// <summary>Consecutive slots of one buffer, each at an odd offset so that no view is aligned by accident.</summary>
    private sealed class Layout
    {
        public int Length { get; private set; }

        public Slot Add(int length)
        {
            var slot = new Slot(Length + 1, length);
            Length += length + 1;
            return slot;
        }
    }
}
