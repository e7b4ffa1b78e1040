using System.Runtime.CompilerServices;

namespace FedLora.Kernels.Cpu;

// tanh-GELU through the logistic function: 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)), so that each
// element costs one vector exp, and neither tail of the curve loses precision to 1 + tanh(u) ~ 0.
public unsafe partial class CpuBackend
{
    /// <summary>
    /// output = 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3).
    /// input and output are (L).
    /// </summary>
    protected override void GeluForwardCore(BufferView input, BufferView output) =>
        Simd.Map(default(GeluOperator), Simd.Address(input), null, null, Simd.Address(output), input.Length);

    /// <summary>
    /// inputGrad += gelu'(x) outputGrad (= when not accumulating), gelu'(x) = sigma + 2 x u'(x) e sigma^2
    /// with e = e^(-2u), sigma = 1 / (1 + e) and u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2). All three are (L).
    /// </summary>
    protected override void GeluBackwardCore(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        var x = Simd.Address(input);
        var dy = Simd.Address(outputGrad);
        var dx = Simd.Address(inputGrad);
        if (accumulate) Simd.Map(default(GeluBackwardOperator), x, dy, dx, dx, input.Length);
        else Simd.Map(default(GeluGradientOperator), x, dy, null, dx, input.Length);
    }
}

/// <summary>destination = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): tanh-GELU.</summary>
internal readonly struct GeluOperator : IElementwise
{
    /// <summary>sqrt(2/pi).</summary>
    public const float Scale = 0.7978845608028654f;

    /// <summary>The cubic term's coefficient.</summary>
    public const float Cubic = 0.044715f;

    public static int Arity => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector>
    {
        // -2u = x (-2 sqrt(2/pi) - 2 sqrt(2/pi) 0.044715 x^2). Past 88 (x below -10) e^(-2u) is held
        // at e^88: the result is x / (1 + e^88) = 6e-39 x, where the exact value is smaller still.
        var minusTwoU = x * TVector.MultiplyAdd(TVector.Create(-2 * Scale * Cubic), x * x, TVector.Create(-2 * Scale));
        return x / (TVector.Create(1f) + Simd.ExpFlushToZero(TVector.Min(TVector.Create(88f), minusTwoU)));
    }
}

/// <summary>destination = z + gelu'(x) y, rounded once (the accumulating backward).</summary>
internal readonly struct GeluBackwardOperator : IElementwise
{
    public static int Arity => 3;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> =>
        TVector.MultiplyAdd(GeluGradientOperator.Derivative(x), y, z);
}

/// <summary>destination = gelu'(x) y (the overwriting backward).</summary>
internal readonly struct GeluGradientOperator : IElementwise
{
    public static int Arity => 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> =>
        Derivative(x) * y;

    /// <summary>gelu'(x) = sigma + 2 x u'(x) e sigma^2, with e = e^(-2u) and sigma = 1/(1+e).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TVector Derivative<TVector>(TVector x) where TVector : unmanaged, ISimdFloat<TVector>
    {
        var x2 = x * x;
        var minusTwoU = x * TVector.MultiplyAdd(TVector.Create(-2 * GeluOperator.Scale * GeluOperator.Cubic), x2, TVector.Create(-2 * GeluOperator.Scale));
        // Below x ~ -9.9, e^(-2u) overflows and inf * 0 would give NaN; there gelu' < e^-80 anyway.
        var e = Simd.ExpFlushToZero(TVector.Min(TVector.Create(80f), minusTwoU));
        var sigma = TVector.Create(1f) / (TVector.Create(1f) + e);
        var twoDuDx = TVector.MultiplyAdd(TVector.Create(2 * GeluOperator.Scale * 3 * GeluOperator.Cubic), x2, TVector.Create(2 * GeluOperator.Scale));
        // e sigma = 1 - sigma is at most 1: multiplying by it first keeps x u'(x) from overflowing.
        return TVector.MultiplyAdd(x * twoDuDx * (e * sigma), sigma, sigma);
    }
}
