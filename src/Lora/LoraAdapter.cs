using FedLora.Kernels;

namespace FedLora.Lora;

/// <summary>
/// A LoRA adapter on a linear layer W (O,C): A is (r,C), B is (O,r), and the layer computes
/// y = x W^T + b + s (x A^T) B^T. The views live in a trainable buffer owned by the caller (a model
/// keeps every adapter of every layer in one buffer, llm.c style).
/// </summary>
/// <param name="InFeatures">C, the layer's input width.</param>
/// <param name="OutFeatures">O, the layer's output width.</param>
/// <param name="Rank">r.</param>
/// <param name="Scale">s, from alpha and r (see <see cref="LoraScale"/>).</param>
/// <param name="A">The (r,C) down-projection.</param>
/// <param name="B">The (O,r) up-projection.</param>
public readonly record struct LoraAdapter(int InFeatures, int OutFeatures, int Rank, float Scale, BufferView A, BufferView B)
{
    /// <summary>Number of trainable values, r (C + O).</summary>
    public int ParameterCount => Rank * (InFeatures + OutFeatures);

    /// <summary>
    /// Fills A with peft's default kaiming-uniform(a = sqrt(5)) init, U(-1/sqrt(C), 1/sqrt(C)), and B
    /// with zeros, so that a fresh adapter leaves the layer's output unchanged.
    /// </summary>
    public void Initialize(Backend backend, Random random)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(random);
        var bound = InFeatures == 0 ? 0 : 1.0 / Math.Sqrt(InFeatures);
        var values = new float[A.Length];
        for (var i = 0; i < values.Length; i++) values[i] = (float)((random.NextDouble() * 2 - 1) * bound);
        backend.Upload(values, A);
        backend.Fill(B, 0f);
    }

    /// <summary>
    /// y = x W^T + b + scale (x A_I^T) B_I^T, keeping hidden = x A_I^T for the backward pass. x is (N,C),
    /// weight (O,C), bias (O), hidden (N,k), y (N,O). <paramref name="rankIndices"/> null uses every rank;
    /// <paramref name="scale"/> is <see cref="Scale"/> for plain LoRA and s r / k for an FSLoRA sketch.
    /// </summary>
    public void Forward(Backend backend, int n, BufferView input, BufferView weight, BufferView? bias,
        int[]? rankIndices, float scale, BufferView hidden, BufferView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        backend.LowRankMatmulForward(n, InFeatures, OutFeatures, Rank, input, weight, bias, A, B, scale, rankIndices, hidden, output);
    }

    /// <summary>
    /// Accumulates the gradients of <see cref="Forward"/>: into gradA (r,C) and gradB (O,r) at the active
    /// ranks, and, when not null, inputGrad (N,C) (overwritten instead with <c>accumulate</c> false),
    /// weightGrad (O,C) and biasGrad (O).
    /// </summary>
    public void Backward(Backend backend, int n, BufferView outputGrad, BufferView input, BufferView weight,
        int[]? rankIndices, float scale, BufferView hidden, BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad,
        BufferView? gradA, BufferView? gradB, bool accumulate = true)
    {
        ArgumentNullException.ThrowIfNull(backend);
        backend.LowRankMatmulBackward(n, InFeatures, OutFeatures, Rank, outputGrad, input, weight, A, B, scale, rankIndices, hidden,
            inputGrad, weightGrad, biasGrad, gradA, gradB, accumulate);
    }

    /// <summary>weight += s B A: folds the adapter into the base weight (O,C).</summary>
    public void Merge(Backend backend, BufferView weight) => AddProduct(backend, weight, Scale);

    /// <summary>weight -= s B A: takes a merged adapter back out of the base weight (O,C).</summary>
    public void Unmerge(Backend backend, BufferView weight) => AddProduct(backend, weight, -Scale);

    private void AddProduct(Backend backend, BufferView weight, float coefficient)
    {
        ArgumentNullException.ThrowIfNull(backend);
        // W += B diag(c) A is the stacked aggregation of a single adapter.
        Span<float> rowWeights = Rank <= 512 ? stackalloc float[Rank] : new float[Rank];
        rowWeights.Fill(coefficient);
        backend.StackedAggregation(OutFeatures, InFeatures, Rank, B, A, rowWeights, weight);
    }
}
