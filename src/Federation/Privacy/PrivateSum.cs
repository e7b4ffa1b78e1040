namespace FedLora.Federation.Privacy;

/// <summary>
/// The one place a private round's sum is formed: every client's contribution is clipped to L2 norm S
/// as it is added (<see cref="ClipAndAdd"/>), and the sum is released only with N(0, (z S)^2) added to
/// every coordinate and divided by the fixed denominator M (<see cref="Release"/>), the expected number
/// of clients a round, not the number that reported (McMahan et al., 2018). Adding or removing one client
/// therefore moves the released sum by at most S / M against noise z S / M, whatever the contributions.
/// </summary>
/// <remarks>
/// A strategy implementing <see cref="IPrivateAggregation"/> lays each client's contribution out as the
/// parts of one vector (all modules, both factors, flattened), passes it through <see cref="ClipAndAdd"/>
/// exactly once, calls <see cref="Release"/> once, and computes the next state from the released mean and
/// public data only (the state, the plan's ranks and masks). Single use: one round, one sum.
/// </remarks>
public sealed class PrivateSum
{
    private readonly Random _random;
    private readonly List<double> _norms = [];
    private bool _released;
    private double? _spareGaussian;

    /// <summary>A round's sum at clip <paramref name="clip"/> (S), noise multiplier <paramref name="noiseMultiplier"/> (z) and denominator <paramref name="expectedClients"/> (M).</summary>
    /// <exception cref="ArgumentOutOfRangeException">S is not finite and > 0, z is negative or not finite, or M is not finite and > 0.</exception>
    public PrivateSum(double clip, double noiseMultiplier, double expectedClients, Random random)
    {
        if (!double.IsFinite(clip) || clip <= 0) throw new ArgumentOutOfRangeException(nameof(clip), clip, "the clip norm S must be finite and > 0");
        if (!double.IsFinite(noiseMultiplier) || noiseMultiplier < 0) throw new ArgumentOutOfRangeException(nameof(noiseMultiplier), noiseMultiplier, "the noise multiplier z must be finite and >= 0");
        if (!double.IsFinite(expectedClients) || expectedClients <= 0) throw new ArgumentOutOfRangeException(nameof(expectedClients), expectedClients, "the denominator M (clients expected a round) must be finite and > 0");
        ArgumentNullException.ThrowIfNull(random);
        Clip = clip;
        NoiseMultiplier = noiseMultiplier;
        ExpectedClients = expectedClients;
        _random = random;
    }

    /// <summary>S.</summary>
    public double Clip { get; }

    /// <summary>z.</summary>
    public double NoiseMultiplier { get; }

    /// <summary>M, the fixed denominator.</summary>
    public double ExpectedClients { get; }

    /// <summary>z S, the standard deviation of the noise on each coordinate of the sum.</summary>
    public double NoiseStandardDeviation => NoiseMultiplier * Clip;

    /// <summary>Each added contribution's L2 norm before clipping, in the order added (adaptive clipping counts those at most S).</summary>
    public IReadOnlyList<double> Norms => _norms;

    /// <summary>
    /// Scales <paramref name="contribution"/> (the parts of one client's vector) in place to L2 norm at most S,
    /// adds it to <paramref name="sum"/> (parts of the same lengths) and returns its norm before clipping.
    /// </summary>
    /// <exception cref="ArgumentException">The parts do not match, or a value is not finite.</exception>
    /// <exception cref="InvalidOperationException">The sum was already released.</exception>
    public double ClipAndAdd(IReadOnlyList<double[]> contribution, IReadOnlyList<double[]> sum)
    {
        ArgumentNullException.ThrowIfNull(contribution);
        ArgumentNullException.ThrowIfNull(sum);
        if (_released) throw new InvalidOperationException("this round's private sum was already released: a contribution added now would escape the noise");
        if (contribution.Count != sum.Count) throw new ArgumentException($"the contribution has {contribution.Count} parts but the sum {sum.Count}", nameof(contribution));
        double squares = 0;
        for (var p = 0; p < contribution.Count; p++)
        {
            if (contribution[p].Length != sum[p].Length) throw new ArgumentException($"part {p} of the contribution has {contribution[p].Length} values but the sum's has {sum[p].Length}", nameof(contribution));
            foreach (var value in contribution[p]) squares += value * value;
        }
        var norm = Math.Sqrt(squares);
        if (!double.IsFinite(norm)) throw new ArgumentException("a contribution holds a non-finite value: it cannot be clipped", nameof(contribution));
        var factor = norm > Clip ? Clip / norm : 1;
        for (var p = 0; p < contribution.Count; p++)
        {
            var (part, total) = (contribution[p], sum[p]);
            for (var i = 0; i < part.Length; i++)
            {
                part[i] *= factor;
                total[i] += part[i];
            }
        }
        _norms.Add(norm);
        return norm;
    }

    /// <summary>sum[i] = (sum[i] + N(0, (z S)^2)) / M for every coordinate of every part. Once per round.</summary>
    /// <exception cref="InvalidOperationException">Already released.</exception>
    public void Release(IReadOnlyList<double[]> sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        if (_released) throw new InvalidOperationException("this round's private sum was already released: a second release would spend the budget twice");
        _released = true;
        var deviation = NoiseStandardDeviation;
        foreach (var part in sum)
        {
            for (var i = 0; i < part.Length; i++) part[i] = (part[i] + (deviation > 0 ? deviation * NextGaussian() : 0)) / ExpectedClients;
        }
    }

    /// <summary>A standard normal draw (Box-Muller, both values of a pair used).</summary>
    internal double NextGaussian()
    {
        if (_spareGaussian is { } spare)
        {
            _spareGaussian = null;
            return spare;
        }
        var radius = Math.Sqrt(-2 * Math.Log(1 - _random.NextDouble()));
        var angle = 2 * Math.PI * _random.NextDouble();
        _spareGaussian = radius * Math.Sin(angle);
        return radius * Math.Cos(angle);
    }
}
