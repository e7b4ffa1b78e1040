namespace FedLora.Kernels;

/// <summary>
/// Owns device memory and runs FedLora's op set. Model code is written once against this class
/// and runs unchanged on every backend.
/// </summary>
/// <remarks>
/// <para>Dimension letters, used in every op's shape line:</para>
/// <list type="table">
/// <item><term>N</term><description>rows, B*T for activations</description></item>
/// <item><term>C</term><description>input channels</description></item>
/// <item><term>O</term><description>output channels</description></item>
/// <item><term>r</term><description>rank of a LoRA adapter; A is (r,C), B is (O,r)</description></item>
/// <item><term>k</term><description>number of active ranks: |I| for a rank index set I, else r</description></item>
/// <item><term>R</term><description>total rank of stacked adapters, sum of r_k</description></item>
/// <item><term>B, T, NH, hs</term><description>batch, time, heads, head size C/NH</description></item>
/// <item><term>V</term><description>vocabulary size</description></item>
/// </list>
/// <para>All matrices are row-major float32. Forward ops overwrite their outputs; backward ops
/// accumulate (+=) into gradients, as in llm.c, so that a gradient shared by two paths (the
/// residual stream, a tied embedding) sums naturally, unless accumulate is false, which overwrites
/// the input gradient (BLAS's beta = 0 against beta = 1): the first op to write an activation
/// gradient then needs no zeroed buffer, and does not read one back. Weight, bias and adapter
/// gradients always accumulate. Outputs come last in every signature and must not overlap the
/// inputs unless an op says so.</para>
/// <para>Every public op validates its arguments here, once, and throws
/// <see cref="ArgumentException"/> naming the operand and both shapes; the backend's
/// <c>*Core</c> method then runs unchecked.</para>
/// </remarks>
public abstract class Backend : IDisposable
{
    /// <summary>Short name used on the command line: "reference", "cpu", "ilgpu-cpu", "cuda:0".</summary>
    public abstract string Name { get; }

    /// <summary>A human-readable description of the device and the instruction set in use.</summary>
    public abstract string Description { get; }

    // ---------------------------------------------------------------- memory

    /// <summary>Allocates <paramref name="length"/> floats, zero-initialised.</summary>
    public DeviceBuffer Allocate(int length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, "a buffer length must be >= 0");
        return AllocateCore(length);
    }

    /// <summary>Copies host floats into a view. source is (L), destination is (L).</summary>
    public void Upload(ReadOnlySpan<float> source, BufferView destination)
    {
        Check.Own(this, destination, nameof(destination));
        Check.Length(nameof(source), source.Length, destination.Length, $"({destination.Length}) to match {nameof(destination)}");
        UploadCore(source, destination);
    }

    /// <summary>Copies a view to host floats. source is (L), destination is (L).</summary>
    public void Download(BufferView source, Span<float> destination)
    {
        Check.Own(this, source, nameof(source));
        Check.Length(nameof(destination), destination.Length, source.Length, $"({source.Length}) to match {nameof(source)}");
        DownloadCore(source, destination);
    }

    /// <summary>Downloads a view into a new array (not for hot paths).</summary>
    public float[] ToArray(BufferView source)
    {
        var result = new float[source.Length];
        Download(source, result);
        return result;
    }

    /// <summary>Waits until every op issued so far has finished.</summary>
    public virtual void Synchronize()
    {
    }

    // ---------------------------------------------------------------- vector ops

    /// <summary>x = value. x is (L).</summary>
    public void Fill(BufferView x, float value)
    {
        Check.Own(this, x, nameof(x));
        FillCore(x, value);
    }

    /// <summary>destination = source. Both are (L).</summary>
    public void Copy(BufferView source, BufferView destination)
    {
        Check.Own(this, source, nameof(source));
        Check.View(this, destination, nameof(destination), source.Length, $"({source.Length}) to match {nameof(source)}");
        CopyCore(source, destination);
    }

    /// <summary>x *= alpha. x is (L).</summary>
    public void Scale(float alpha, BufferView x)
    {
        Check.Own(this, x, nameof(x));
        ScaleCore(alpha, x);
    }

    /// <summary>y += alpha x. x and y are (L).</summary>
    public void Axpy(float alpha, BufferView x, BufferView y)
    {
        Check.Own(this, x, nameof(x));
        Check.View(this, y, nameof(y), x.Length, $"({x.Length}) to match {nameof(x)}");
        AxpyCore(alpha, x, y);
    }

    /// <summary>destination = sum_k weights[k] sources[k]. Each source and destination is (L).</summary>
    public void WeightedSum(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination)
    {
        Check.Own(this, destination, nameof(destination));
        Check.Length(nameof(weights), weights.Length, sources.Length, $"({sources.Length}), one weight per source");
        for (var k = 0; k < sources.Length; k++)
        {
            Check.ViewAt(this, sources[k], nameof(sources), k, destination.Length, $"({destination.Length}) to match {nameof(destination)}");
        }
        WeightedSumCore(sources, weights, destination);
    }

    /// <summary>Returns sum_i x_i^2, accumulated in double. x is (L).</summary>
    public double SumOfSquares(BufferView x)
    {
        Check.Own(this, x, nameof(x));
        return SumOfSquaresCore(x);
    }

    // ---------------------------------------------------------------- matmul

    /// <summary>output = input weight^T + bias. input is (N,C), weight is (O,C), bias is (O), output is (N,O).</summary>
    public void MatmulForward(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output)
    {
        Check.Dims((nameof(n), n), (nameof(c), c), (nameof(o), o));
        Check.View(this, input, nameof(input), "(N,C)", n, c);
        Check.View(this, weight, nameof(weight), "(O,C)", o, c);
        Check.Optional(this, bias, nameof(bias), "(O)", o);
        Check.View(this, output, nameof(output), "(N,O)", n, o);
        MatmulForwardCore(n, c, o, input, weight, bias, output);
    }

    /// <summary>
    /// inputGrad += outputGrad weight; weightGrad += outputGrad^T input; biasGrad += colsum(outputGrad).
    /// outputGrad is (N,O), input is (N,C), weight is (O,C); inputGrad is (N,C), weightGrad (O,C),
    /// biasGrad (O). A null gradient is skipped (frozen weights, or an input that needs none). With
    /// <c>accumulate</c> false, inputGrad = outputGrad weight instead (the weight and bias gradients still add).
    /// </summary>
    public void MatmulBackward(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate = true)
    {
        Check.Dims((nameof(n), n), (nameof(c), c), (nameof(o), o));
        Check.View(this, outputGrad, nameof(outputGrad), "(N,O)", n, o);
        Check.View(this, input, nameof(input), "(N,C)", n, c);
        Check.View(this, weight, nameof(weight), "(O,C)", o, c);
        Check.Optional(this, inputGrad, nameof(inputGrad), "(N,C)", n, c);
        Check.Optional(this, weightGrad, nameof(weightGrad), "(O,C)", o, c);
        Check.Optional(this, biasGrad, nameof(biasGrad), "(O)", o);
        MatmulBackwardCore(n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);
    }

    // ---------------------------------------------------------------- low-rank (LoRA) matmul

    /// <summary>
    /// output = input weight^T + bias + s (input A_I^T) B_I^T, and loraHidden = input A_I^T (kept for
    /// the backward pass). input is (N,C), weight is (O,C), bias is (O), A is (r,C), B is (O,r),
    /// loraHidden is (N,k), output is (N,O). With <paramref name="rankIndices"/> null every rank
    /// takes part (k = r); otherwise only A's rows I and B's columns I do (k = |I|), in I's order.
    /// </summary>
    public void LowRankMatmulForward(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias,
        BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output)
    {
        Check.Dims((nameof(n), n), (nameof(c), c), (nameof(o), o), (nameof(rank), rank));
        var k = Check.RankIndices(rankIndices, rank);
        Check.View(this, input, nameof(input), "(N,C)", n, c);
        Check.View(this, weight, nameof(weight), "(O,C)", o, c);
        Check.Optional(this, bias, nameof(bias), "(O)", o);
        Check.View(this, loraA, nameof(loraA), "(r,C)", rank, c);
        Check.View(this, loraB, nameof(loraB), "(O,r)", o, rank);
        Check.View(this, loraHidden, nameof(loraHidden), "(N,k)", n, k);
        Check.View(this, output, nameof(output), "(N,O)", n, o);
        LowRankMatmulForwardCore(n, c, o, rank, input, weight, bias, loraA, loraB, scale, rankIndices, loraHidden, output);
    }

    /// <summary>
    /// With t = loraHidden = input A_I^T (from the forward pass) and u = outputGrad B_I:
    /// loraBGrad[:,I] += s outputGrad^T t; loraAGrad[I,:] += s u^T input;
    /// inputGrad += outputGrad weight + s u A_I; weightGrad += outputGrad^T input; biasGrad += colsum(outputGrad).
    /// outputGrad is (N,O), input (N,C), weight (O,C), A and loraAGrad (r,C), B and loraBGrad (O,r),
    /// loraHidden (N,k), inputGrad (N,C), weightGrad (O,C), biasGrad (O). Null gradients are skipped. With
    /// <c>accumulate</c> false, inputGrad = outputGrad weight + s u A_I instead (the other gradients still add).
    /// </summary>
    public void LowRankMatmulBackward(int n, int c, int o, int rank, BufferView outputGrad, BufferView input,
        BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad,
        bool accumulate = true)
    {
        Check.Dims((nameof(n), n), (nameof(c), c), (nameof(o), o), (nameof(rank), rank));
        var k = Check.RankIndices(rankIndices, rank);
        Check.View(this, outputGrad, nameof(outputGrad), "(N,O)", n, o);
        Check.View(this, input, nameof(input), "(N,C)", n, c);
        Check.View(this, weight, nameof(weight), "(O,C)", o, c);
        Check.View(this, loraA, nameof(loraA), "(r,C)", rank, c);
        Check.View(this, loraB, nameof(loraB), "(O,r)", o, rank);
        Check.View(this, loraHidden, nameof(loraHidden), "(N,k)", n, k);
        Check.Optional(this, inputGrad, nameof(inputGrad), "(N,C)", n, c);
        Check.Optional(this, weightGrad, nameof(weightGrad), "(O,C)", o, c);
        Check.Optional(this, biasGrad, nameof(biasGrad), "(O)", o);
        Check.Optional(this, loraAGrad, nameof(loraAGrad), "(r,C)", rank, c);
        Check.Optional(this, loraBGrad, nameof(loraBGrad), "(O,r)", o, rank);
        LowRankMatmulBackwardCore(n, c, o, rank, outputGrad, input, weight, loraA, loraB, scale, rankIndices, loraHidden,
            inputGrad, weightGrad, biasGrad, loraAGrad, loraBGrad, accumulate);
    }

    // ---------------------------------------------------------------- federated aggregation kernels

    /// <summary>
    /// Scatters a rank-k sub-adapter's change into a rank-r adapter: A[I,:] += coefficient subA;
    /// B[:,I] += coefficient subB. subA is (k,C), subB is (O,k), A is (r,C), B is (O,r), I has k
    /// distinct indices in [0, r), the same set for A's rows and B's columns.
    /// </summary>
    public void MaskedSketchUpdate(int c, int o, int rank, int[] rankIndices, float coefficient,
        BufferView subA, BufferView subB, BufferView loraA, BufferView loraB)
    {
        ArgumentNullException.ThrowIfNull(rankIndices);
        Check.Dims((nameof(c), c), (nameof(o), o), (nameof(rank), rank));
        var k = Check.RankIndices(rankIndices, rank);
        Check.View(this, subA, nameof(subA), "(k,C)", k, c);
        Check.View(this, subB, nameof(subB), "(O,k)", o, k);
        Check.View(this, loraA, nameof(loraA), "(r,C)", rank, c);
        Check.View(this, loraB, nameof(loraB), "(O,r)", o, rank);
        MaskedSketchUpdateCore(c, o, rank, rankIndices, coefficient, subA, subB, loraA, loraB);
    }

    /// <summary>
    /// weight += B_stack diag(rowWeights) A_stack: FLoRA's exact aggregation of adapters of different
    /// ranks in one GEMM, with no cross terms. B_stack = [B_1 ... B_K] is (O,R), A_stack = [A_1; ...; A_K]
    /// is (R,C), rowWeights is (R) (client k's rows carry p_k s_k), weight is (O,C).
    /// </summary>
    public void StackedAggregation(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA,
        ReadOnlySpan<float> rowWeights, BufferView weight)
    {
        Check.Dims((nameof(o), o), (nameof(c), c), (nameof(stackedRank), stackedRank));
        Check.View(this, stackedB, nameof(stackedB), "(O,R)", o, stackedRank);
        Check.View(this, stackedA, nameof(stackedA), "(R,C)", stackedRank, c);
        Check.Length(nameof(rowWeights), rowWeights.Length, stackedRank, $"(R) = ({stackedRank})");
        Check.View(this, weight, nameof(weight), "(O,C)", o, c);
        StackedAggregationCore(o, c, stackedRank, stackedB, stackedA, rowWeights, weight);
    }

    // ---------------------------------------------------------------- transformer ops

    /// <summary>
    /// output = (input - mean) * rstd * weight + bias per row, with mean and rstd = 1/sqrt(var + 1e-5)
    /// saved for the backward pass. input and output are (N,C), weight and bias (C), mean and rstd (N).
    /// </summary>
    public void LayerNormForward(int n, int c, BufferView input, BufferView weight, BufferView bias,
        BufferView output, BufferView mean, BufferView rstd)
    {
        Check.Dims((nameof(n), n), (nameof(c), c));
        Check.View(this, input, nameof(input), "(N,C)", n, c);
        Check.View(this, weight, nameof(weight), "(C)", c);
        Check.View(this, bias, nameof(bias), "(C)", c);
        Check.View(this, output, nameof(output), "(N,C)", n, c);
        Check.View(this, mean, nameof(mean), "(N)", n);
        Check.View(this, rstd, nameof(rstd), "(N)", n);
        LayerNormForwardCore(n, c, input, weight, bias, output, mean, rstd);
    }

    /// <summary>
    /// Accumulates the layernorm gradients. outputGrad, input and inputGrad are (N,C); weight,
    /// weightGrad and biasGrad (C); mean and rstd (N). Null parameter gradients are skipped.
    /// </summary>
    public void LayerNormBackward(int n, int c, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad)
    {
        Check.Dims((nameof(n), n), (nameof(c), c));
        Check.View(this, outputGrad, nameof(outputGrad), "(N,C)", n, c);
        Check.View(this, input, nameof(input), "(N,C)", n, c);
        Check.View(this, weight, nameof(weight), "(C)", c);
        Check.View(this, mean, nameof(mean), "(N)", n);
        Check.View(this, rstd, nameof(rstd), "(N)", n);
        Check.View(this, inputGrad, nameof(inputGrad), "(N,C)", n, c);
        Check.Optional(this, weightGrad, nameof(weightGrad), "(C)", c);
        Check.Optional(this, biasGrad, nameof(biasGrad), "(C)", c);
        LayerNormBackwardCore(n, c, outputGrad, input, weight, mean, rstd, inputGrad, weightGrad, biasGrad);
    }

    /// <summary>output = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). input and output are (L).</summary>
    public void GeluForward(BufferView input, BufferView output)
    {
        Check.Own(this, input, nameof(input));
        Check.View(this, output, nameof(output), "(L)", input.Length);
        GeluForwardCore(input, output);
    }

    /// <summary>
    /// inputGrad += gelu'(input) outputGrad, or = with <c>accumulate</c> false. All three are (L).
    /// </summary>
    public void GeluBackward(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate = true)
    {
        Check.Own(this, input, nameof(input));
        Check.View(this, outputGrad, nameof(outputGrad), "(L)", input.Length);
        Check.View(this, inputGrad, nameof(inputGrad), "(L)", input.Length);
        GeluBackwardCore(input, outputGrad, inputGrad, accumulate);
    }

    /// <summary>output = a + b. All three are (L).</summary>
    public void ResidualForward(BufferView a, BufferView b, BufferView output)
    {
        Check.Own(this, a, nameof(a));
        Check.View(this, b, nameof(b), "(L)", a.Length);
        Check.View(this, output, nameof(output), "(L)", a.Length);
        ResidualForwardCore(a, b, output);
    }

    /// <summary>aGrad += outputGrad; bGrad += outputGrad. All three are (L).</summary>
    public void ResidualBackward(BufferView outputGrad, BufferView aGrad, BufferView bGrad)
    {
        Check.Own(this, outputGrad, nameof(outputGrad));
        Check.View(this, aGrad, nameof(aGrad), "(L)", outputGrad.Length);
        Check.View(this, bGrad, nameof(bGrad), "(L)", outputGrad.Length);
        ResidualBackwardCore(outputGrad, aGrad, bGrad);
    }

    /// <summary>
    /// Causal multi-head self-attention. input is (B,T,3C) holding q, k, v; attention (B,NH,T,T)
    /// receives the softmaxed scores (entries above the diagonal are 0) for the backward pass;
    /// output is (B,T,C). Scores are scaled by 1/sqrt(hs), hs = C/NH.
    /// </summary>
    public void AttentionForward(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        Check.Dims((nameof(b), b), (nameof(t), t), (nameof(c), c), (nameof(heads), heads));
        Check.Heads(c, heads);
        Check.View(this, input, nameof(input), "(B,T,3C)", b, t, 3 * c);
        Check.View(this, attention, nameof(attention), "(B,NH,T,T)", b, heads, t, t);
        Check.View(this, output, nameof(output), "(B,T,C)", b, t, c);
        AttentionForwardCore(b, t, c, heads, input, attention, output);
    }

    /// <summary>
    /// inputGrad += d(attention)/d(input) outputGrad, or = with <c>accumulate</c> false. input and
    /// inputGrad are (B,T,3C), attention is (B,NH,T,T) from the forward pass, outputGrad is (B,T,C).
    /// </summary>
    public void AttentionBackward(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad, bool accumulate = true)
    {
        Check.Dims((nameof(b), b), (nameof(t), t), (nameof(c), c), (nameof(heads), heads));
        Check.Heads(c, heads);
        Check.View(this, input, nameof(input), "(B,T,3C)", b, t, 3 * c);
        Check.View(this, attention, nameof(attention), "(B,NH,T,T)", b, heads, t, t);
        Check.View(this, outputGrad, nameof(outputGrad), "(B,T,C)", b, t, c);
        Check.View(this, inputGrad, nameof(inputGrad), "(B,T,3C)", b, t, 3 * c);
        AttentionBackwardCore(b, t, c, heads, input, attention, outputGrad, inputGrad, accumulate);
    }

    /// <summary>
    /// output[b,t,:] = tokenTable[tokens[b,t],:] + positionTable[t,:]. tokens is (B*T) with values in
    /// [0, V); tokenTable is (V,C); positionTable is (maxT,C) with maxT >= T (only its first T rows are
    /// read); output is (B,T,C).
    /// </summary>
    public void EmbeddingForward(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable,
        BufferView positionTable, BufferView output)
    {
        Check.Dims((nameof(b), b), (nameof(t), t), (nameof(c), c), (nameof(vocab), vocab));
        Check.Tokens(nameof(tokens), tokens, b * t, vocab, allowIgnored: false);
        Check.View(this, tokenTable, nameof(tokenTable), "(V,C)", vocab, c);
        Check.Rows(this, positionTable, nameof(positionTable), t, c);
        Check.View(this, output, nameof(output), "(B,T,C)", b, t, c);
        EmbeddingForwardCore(b, t, c, vocab, tokens, tokenTable, positionTable, output);
    }

    /// <summary>
    /// tokenTableGrad[tokens[b,t],:] += outputGrad[b,t,:]; positionTableGrad[t,:] += outputGrad[b,t,:].
    /// outputGrad is (B,T,C), tokenTableGrad (V,C), positionTableGrad (maxT,C) with maxT >= T. Null
    /// gradients are skipped.
    /// </summary>
    public void EmbeddingBackward(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad,
        BufferView? tokenTableGrad, BufferView? positionTableGrad)
    {
        Check.Dims((nameof(b), b), (nameof(t), t), (nameof(c), c), (nameof(vocab), vocab));
        Check.Tokens(nameof(tokens), tokens, b * t, vocab, allowIgnored: false);
        Check.View(this, outputGrad, nameof(outputGrad), "(B,T,C)", b, t, c);
        Check.Optional(this, tokenTableGrad, nameof(tokenTableGrad), "(V,C)", vocab, c);
        if (positionTableGrad is { } p) Check.Rows(this, p, nameof(positionTableGrad), t, c);
        EmbeddingBackwardCore(b, t, c, vocab, tokens, outputGrad, tokenTableGrad, positionTableGrad);
    }

    /// <summary>
    /// probabilities = softmax(logits) per row; losses[i] = -log probabilities[i, targets[i]], or 0
    /// where targets[i] = -1 (a position the loss ignores). logits and probabilities are (N,V),
    /// targets and losses are (N).
    /// </summary>
    public void CrossEntropyForward(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets,
        BufferView probabilities, BufferView losses)
    {
        Check.Dims((nameof(n), n), (nameof(vocab), vocab));
        Check.View(this, logits, nameof(logits), "(N,V)", n, vocab);
        Check.Tokens(nameof(targets), targets, n, vocab, allowIgnored: true);
        Check.View(this, probabilities, nameof(probabilities), "(N,V)", n, vocab);
        Check.View(this, losses, nameof(losses), "(N)", n);
        CrossEntropyForwardCore(n, vocab, logits, targets, probabilities, losses);
    }

    /// <summary>
    /// logitsGrad[i,:] += lossScale (probabilities[i,:] - onehot(targets[i])) for rows whose target is
    /// not -1 (lossScale is d(loss)/d(losses[i]), e.g. 1/count for a mean). probabilities and
    /// logitsGrad are (N,V), targets is (N). With <c>accumulate</c> false those rows are written (=)
    /// instead, and the rows whose target is -1 set to 0.
    /// </summary>
    public void CrossEntropyBackward(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets,
        float lossScale, BufferView logitsGrad, bool accumulate = true)
    {
        Check.Dims((nameof(n), n), (nameof(vocab), vocab));
        Check.View(this, probabilities, nameof(probabilities), "(N,V)", n, vocab);
        Check.Tokens(nameof(targets), targets, n, vocab, allowIgnored: true);
        Check.View(this, logitsGrad, nameof(logitsGrad), "(N,V)", n, vocab);
        CrossEntropyBackwardCore(n, vocab, probabilities, targets, lossScale, logitsGrad, accumulate);
    }

    // ---------------------------------------------------------------- optimizers

    /// <summary>
    /// One AdamW step (decoupled weight decay, bias-corrected moments) on every element whose mask is
    /// non-zero: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd p).
    /// grads, mask, parameters, m and v are (L); elements with mask 0 are left untouched.
    /// </summary>
    public void AdamW(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask,
        BufferView parameters, BufferView m, BufferView v)
    {
        if (timestep < 1) throw new ArgumentOutOfRangeException(nameof(timestep), timestep, "AdamW steps count from 1");
        settings.Validate();
        Check.Own(this, grads, nameof(grads));
        Check.Optional(this, mask, nameof(mask), "(L)", grads.Length);
        Check.View(this, parameters, nameof(parameters), "(L)", grads.Length);
        Check.View(this, m, nameof(m), "(L)", grads.Length);
        Check.View(this, v, nameof(v), "(L)", grads.Length);
        AdamWCore(settings, timestep, grads, mask, parameters, m, v);
    }

    /// <summary>
    /// One SGD step on every element whose mask is non-zero: p -= lr (g + wd p).
    /// grads, mask and parameters are (L).
    /// </summary>
    public void Sgd(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters)
    {
        if (!float.IsFinite(learningRate) || learningRate < 0) throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "the learning rate must be finite and >= 0");
        if (!float.IsFinite(weightDecay) || weightDecay < 0) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "the weight decay must be finite and >= 0");
        Check.Own(this, grads, nameof(grads));
        Check.Optional(this, mask, nameof(mask), "(L)", grads.Length);
        Check.View(this, parameters, nameof(parameters), "(L)", grads.Length);
        SgdCore(learningRate, weightDecay, grads, mask, parameters);
    }

    // ---------------------------------------------------------------- what each backend implements

#pragma warning disable CS1591 // The Core methods are documented by their public, validating counterparts above.
    protected abstract DeviceBuffer AllocateCore(int length);
    protected abstract void UploadCore(ReadOnlySpan<float> source, BufferView destination);
    protected abstract void DownloadCore(BufferView source, Span<float> destination);
    protected abstract void FillCore(BufferView x, float value);
    protected abstract void CopyCore(BufferView source, BufferView destination);
    protected abstract void ScaleCore(float alpha, BufferView x);
    protected abstract void AxpyCore(float alpha, BufferView x, BufferView y);
    protected abstract void WeightedSumCore(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination);
    protected abstract double SumOfSquaresCore(BufferView x);
    protected abstract void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output);
    protected abstract void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate);
    protected abstract void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias,
        BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output);
    protected abstract void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input,
        BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate);
    protected abstract void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient,
        BufferView subA, BufferView subB, BufferView loraA, BufferView loraB);
    protected abstract void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA,
        ReadOnlySpan<float> rowWeights, BufferView weight);
    protected abstract void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias,
        BufferView output, BufferView mean, BufferView rstd);
    protected abstract void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad);
    protected abstract void GeluForwardCore(BufferView input, BufferView output);
    protected abstract void GeluBackwardCore(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate);
    protected abstract void ResidualForwardCore(BufferView a, BufferView b, BufferView output);
    protected abstract void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad);
    protected abstract void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output);
    protected abstract void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad, bool accumulate);
    protected abstract void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable,
        BufferView positionTable, BufferView output);
    protected abstract void EmbeddingBackwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad,
        BufferView? tokenTableGrad, BufferView? positionTableGrad);
    protected abstract void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets,
        BufferView probabilities, BufferView losses);
    protected abstract void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets,
        float lossScale, BufferView logitsGrad, bool accumulate);
    protected abstract void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask,
        BufferView parameters, BufferView m, BufferView v);
    protected abstract void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters);
#pragma warning restore CS1591

    /// <summary>Releases device resources.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases device resources; <paramref name="disposing"/> is false from a finalizer.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }
}

/// <summary>AdamW hyper-parameters. Defaults are PyTorch's except weight decay (0 here).</summary>
public readonly record struct AdamWSettings(
    float LearningRate = 1e-3f, float Beta1 = 0.9f, float Beta2 = 0.999f, float Epsilon = 1e-8f, float WeightDecay = 0f)
{
    /// <summary>PyTorch's defaults (lr 1e-3, betas 0.9 and 0.999, eps 1e-8) with no weight decay; without it a struct would be all zeros.</summary>
    public AdamWSettings() : this(1e-3f)
    {
    }

    internal void Validate()
    {
        if (!float.IsFinite(LearningRate) || LearningRate < 0) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "the learning rate must be finite and >= 0");
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "beta1 must be in [0, 1)");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "beta2 must be in [0, 1)");
        if (!(Epsilon > 0) || !float.IsFinite(Epsilon)) throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "epsilon must be finite and > 0");
        if (!float.IsFinite(WeightDecay) || WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "the weight decay must be finite and >= 0");
    }
}
