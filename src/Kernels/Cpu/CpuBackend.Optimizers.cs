using System.Runtime.CompilerServices;

namespace FedLora.Kernels.Cpu;

// AdamW and SGD: elementwise over fixed chunks, each element read and written once, with an
// optional mask that leaves masked-out elements (mask 0) untouched.
public unsafe partial class CpuBackend
{
    /// <summary>
    /// One AdamW step where mask != 0: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p -= lr (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd p). The bias corrections are computed in
    /// double once per call, the element updates in float. grads, mask, parameters, m and v are (L).
    /// </summary>
    protected override void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask,
        BufferView parameters, BufferView m, BufferView v)
    {
        var step = new AdamWStep(
            settings.Beta1, settings.Beta2, settings.Epsilon, settings.LearningRate, settings.WeightDecay,
            (float)(1 / (1 - Math.Pow(settings.Beta1, timestep))),
            (float)(1 / (1 - Math.Pow(settings.Beta2, timestep))));
        var job = new AdamWJob(step, Simd.Address(grads), Simd.AddressOrNull(mask), Simd.Address(parameters),
            Simd.Address(m), Simd.Address(v), grads.Length);
        CpuParallel.For(Simd.ChunkCount(grads.Length), ref job);
    }

    /// <summary>One SGD step where mask != 0: p -= lr (g + wd p). grads, mask and parameters are (L).</summary>
    protected override void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters)
    {
        var p = Simd.Address(parameters);
        var step = new SgdOperator(learningRate, weightDecay);
        if (mask is { } keep) Simd.Map(new MaskedSgdOperator(step), Simd.Address(grads), p, Simd.Address(keep), p, grads.Length);
        else Simd.Map(step, Simd.Address(grads), p, null, p, grads.Length);
    }

    /// <summary>AdamW's constants for one step, with the bias corrections as reciprocals.</summary>
    private readonly record struct AdamWStep(float Beta1, float Beta2, float Epsilon, float LearningRate, float WeightDecay,
        float InverseCorrection1, float InverseCorrection2);

    private readonly struct AdamWJob(AdamWStep step, float* grads, float* mask, float* parameters, float* m, float* v, int length)
        : IParallelJob
    {
        public void Execute(int index)
        {
            var start = index * Simd.ChunkLength;
            var n = Math.Min(Simd.ChunkLength, length - start);
            var g = grads + start;
            var keep = mask is null ? null : mask + start;
            var p = parameters + start;
            var m1 = m + start;
            var m2 = v + start;
            var i = 0;
            if (SimdWidth.Use512) i = AdamW<Simd512>(step, g, keep, p, m1, m2, i, n);
            if (SimdWidth.Use256) i = AdamW<Simd256>(step, g, keep, p, m1, m2, i, n);
            if (SimdWidth.Use128) i = AdamW<Simd128>(step, g, keep, p, m1, m2, i, n);
            AdamW<SimdScalar>(step, g, keep, p, m1, m2, i, n);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int AdamW<TVector>(AdamWStep step, float* g, float* mask, float* p, float* m, float* v, int i, int n)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var beta1 = TVector.Create(step.Beta1);
        var beta2 = TVector.Create(step.Beta2);
        var oneMinusBeta1 = TVector.Create(1 - step.Beta1);
        var oneMinusBeta2 = TVector.Create(1 - step.Beta2);
        var inverseCorrection1 = TVector.Create(step.InverseCorrection1);
        var inverseCorrection2 = TVector.Create(step.InverseCorrection2);
        var epsilon = TVector.Create(step.Epsilon);
        var minusLearningRate = TVector.Create(-step.LearningRate);
        var weightDecay = TVector.Create(step.WeightDecay);
        for (; i <= n - TVector.Count; i += TVector.Count)
        {
            var grad = TVector.Load(g + i);
            var oldP = TVector.Load(p + i);
            var oldM = TVector.Load(m + i);
            var oldV = TVector.Load(v + i);
            var newM = TVector.MultiplyAdd(beta1, oldM, oneMinusBeta1 * grad);
            var newV = TVector.MultiplyAdd(beta2, oldV, oneMinusBeta2 * grad * grad);
            var update = newM * inverseCorrection1 / (TVector.Sqrt(newV * inverseCorrection2) + epsilon);
            var newP = TVector.MultiplyAdd(minusLearningRate, TVector.MultiplyAdd(weightDecay, oldP, update), oldP);
            if (mask is not null)
            {
                var keep = TVector.Load(mask + i);
                newM = TVector.WhereZero(keep, oldM, newM);
                newV = TVector.WhereZero(keep, oldV, newV);
                newP = TVector.WhereZero(keep, oldP, newP);
            }
            newM.Store(m + i);
            newV.Store(v + i);
            newP.Store(p + i);
        }
        return i;
    }
}

/// <summary>destination = y - lr (x + wd y): SGD with x the gradient and y the parameter.</summary>
internal readonly struct SgdOperator(float learningRate, float weightDecay) : IElementwise
{
    public static int Arity => 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> =>
        TVector.MultiplyAdd(TVector.Create(-learningRate), TVector.MultiplyAdd(TVector.Create(weightDecay), y, x), y);
}

/// <summary>destination = z == 0 ? y : y - lr (x + wd y): SGD on the elements the mask z keeps.</summary>
internal readonly struct MaskedSgdOperator(SgdOperator step) : IElementwise
{
    public static int Arity => 3;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> =>
        TVector.WhereZero(z, y, step.Invoke(x, y, z));
}
