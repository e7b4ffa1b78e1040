using MathNet.Numerics;

namespace FedLora.Federation.Privacy;

/// <summary>How the clients of a round are drawn, which decides the privacy amplification a round gets.</summary>
public enum ClientSampling
{
    /// <summary>Each client joins a round independently with probability q (add-or-remove-one neighbours).</summary>
    Poisson,

    /// <summary>A fixed number m of the n clients, uniformly without replacement, q = m/n (replace-one neighbours; FedLora's sampler).</summary>
    WithoutReplacement,
}

/// <summary>
/// Renyi differential privacy (RDP) of the sampled Gaussian mechanism, composed over rounds and
/// converted to (epsilon, delta): the accountant of client-level DP-FedAvg.
/// </summary>
/// <remarks>
/// <para>One round releases the sum of the sampled clients' clipped updates plus Gaussian noise of
/// standard deviation z S (S the clip norm, z the noise multiplier). Its RDP at order alpha is, for
/// Poisson sampling with rate q, log(A_alpha) / (alpha - 1) with
/// A_alpha = E_{x ~ N(0, z^2)} [((1 - q) + q exp((2x - 1) / (2 z^2)))^alpha] (Mironov, Talwar and
/// Zhang, "Renyi Differential Privacy of the Sampled Gaussian Mechanism", 2019: the binomial series
/// for integer alpha, the two-sided erfc series for fractional alpha); for sampling without
/// replacement, the upper bound of Wang, Balle and Kasiviswanathan, "Subsampled Renyi Differential
/// Privacy and Analytical Moments Accountant", AISTATS 2019, Theorem 27 (interpolated between integer
/// orders by their Corollary 10). RDP composes by addition over rounds. The conversion to (epsilon,
/// delta) is the improved bound of Balle et al., "Hypothesis Testing Interpretations and Renyi
/// Differential Privacy", 2020, Proposition 12, minimised over the orders.</para>
/// <para>These are the formulas of TensorFlow Privacy's and Opacus's RDP accountants; the tests check
/// this class against their published test values.</para>
/// </remarks>
public sealed class RdpAccountant
{
    /// <summary>Opacus's default orders: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.</summary>
    public static IReadOnlyList<double> DefaultOrders { get; } =
        [.. Enumerable.Range(1, 99).Select(x => 1 + x / 10.0), .. Enumerable.Range(12, 52).Select(x => (double)x)];

    private readonly double[] _orders;
    private readonly double[] _rdp;

    /// <summary>An accountant with nothing spent, over <paramref name="orders"/> (default <see cref="DefaultOrders"/>).</summary>
    /// <exception cref="ArgumentException">An order is below 1 or not a number.</exception>
    public RdpAccountant(IReadOnlyList<double>? orders = null)
    {
        _orders = [.. orders ?? DefaultOrders];
        if (_orders.Length == 0) throw new ArgumentException("an RDP accountant needs at least one order", nameof(orders));
        foreach (var order in _orders)
        {
            if (!(order >= 1)) throw new ArgumentException($"RDP order {order} is invalid: orders must be >= 1", nameof(orders));
        }
        _rdp = new double[_orders.Length];
    }

    /// <summary>The orders alpha the accountant tracks.</summary>
    public IReadOnlyList<double> Orders => _orders;

    /// <summary>The RDP spent so far at each order.</summary>
    public IReadOnlyList<double> Rdp => _rdp;

    /// <summary>Adds <paramref name="rounds"/> rounds of the sampled Gaussian mechanism.</summary>
    /// <param name="sampling">How clients were drawn.</param>
    /// <param name="rate">q, the chance a given client takes part in a round (m/n without replacement).</param>
    /// <param name="noiseMultiplier">z, the noise's standard deviation over the clip norm.</param>
    /// <param name="rounds">Rounds composed.</param>
    public void Compose(ClientSampling sampling, double rate, double noiseMultiplier, int rounds = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rounds);
        var rdp = Compute(sampling, rate, noiseMultiplier, _orders);
        for (var i = 0; i < _rdp.Length; i++) _rdp[i] += rounds * rdp[i];
    }

    /// <summary>The smallest epsilon such that the rounds so far are (epsilon, <paramref name="delta"/>)-DP.</summary>
    public double Epsilon(double delta) => Epsilon(_orders, _rdp, delta);

    /// <summary>The smallest delta such that the rounds so far are (<paramref name="epsilon"/>, delta)-DP.</summary>
    public double Delta(double epsilon) => Delta(_orders, _rdp, epsilon);

    /// <summary>RDP of one round of the sampled Gaussian mechanism at each order.</summary>
    /// <exception cref="ArgumentOutOfRangeException">q is outside [0, 1], or z is negative or not a number.</exception>
    public static double[] Compute(ClientSampling sampling, double rate, double noiseMultiplier, IReadOnlyList<double> orders)
    {
        ArgumentNullException.ThrowIfNull(orders);
        if (!(rate >= 0 && rate <= 1)) throw new ArgumentOutOfRangeException(nameof(rate), rate, "the sampling rate q must be in [0, 1]");
        if (!(noiseMultiplier >= 0)) throw new ArgumentOutOfRangeException(nameof(noiseMultiplier), noiseMultiplier, "the noise multiplier z must be >= 0");
        var result = new double[orders.Count];
        for (var i = 0; i < result.Length; i++)
        {
            var alpha = orders[i];
            result[i] = rate == 0 ? 0
                : double.IsPositiveInfinity(alpha) || noiseMultiplier == 0 ? double.PositiveInfinity
                : rate == 1 ? alpha / (2 * noiseMultiplier * noiseMultiplier)
                : sampling == ClientSampling.Poisson ? PoissonLogA(rate, noiseMultiplier, alpha) / (alpha - 1)
                : WithoutReplacementRdp(rate, noiseMultiplier, alpha);
        }
        return result;
    }

    /// <summary>
    /// The smallest noise multiplier z (to about 0.1%) for which <paramref name="rounds"/> rounds at rate
    /// <paramref name="rate"/> stay (<paramref name="epsilon"/>, <paramref name="delta"/>)-DP.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">epsilon is not positive, or delta is not in (0, 1).</exception>
    /// <exception cref="ArgumentException">No noise below 1e6 reaches the target.</exception>
    public static double NoiseMultiplierFor(double epsilon, double delta, ClientSampling sampling, double rate, int rounds,
        IReadOnlyList<double>? orders = null)
    {
        if (!(epsilon > 0) || double.IsInfinity(epsilon)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "the target epsilon must be finite and > 0");
        if (!(delta > 0 && delta < 1)) throw new ArgumentOutOfRangeException(nameof(delta), delta, "the target delta must be in (0, 1)");
        var alphas = orders ?? DefaultOrders;
        double Spent(double z)
        {
            var rdp = Compute(sampling, rate, z, alphas);
            for (var i = 0; i < rdp.Length; i++) rdp[i] *= rounds;
            return Epsilon(alphas, rdp, delta);
        }
        var high = 1.0;
        while (Spent(high) > epsilon)
        {
            high *= 2;
            if (high > 1e6) throw new ArgumentException($"no noise multiplier up to 1e6 gives epsilon {epsilon} at delta {delta} over {rounds} rounds at rate {rate}");
        }
        var low = 0.0;
        while (high - low > 1e-3 * high)
        {
            var middle = (low + high) / 2;
            if (Spent(middle) > epsilon) low = middle;
            else high = middle;
        }
        return high;
    }

    /// <summary>epsilon = min over alpha of rdp + log1p(-1/alpha) - log(delta alpha) / (alpha - 1), or 0 where the KL bound already gives delta.</summary>
    public static double Epsilon(IReadOnlyList<double> orders, IReadOnlyList<double> rdp, double delta)
    {
        CheckCurve(orders, rdp);
        if (!(delta >= 0 && delta <= 1)) throw new ArgumentOutOfRangeException(nameof(delta), delta, "delta must be in [0, 1]");
        if (delta == 0) return rdp.All(r => r == 0) ? 0 : double.PositiveInfinity;
        var best = double.PositiveInfinity;
        for (var i = 0; i < orders.Count; i++)
        {
            var (alpha, r) = (orders[i], rdp[i]);
            var epsilon = delta * delta + ExpMinusOne(-r) > 0 ? 0
                : alpha > 1.01 ? r + Math.Log(1 - 1 / alpha) - Math.Log(delta * alpha) / (alpha - 1)
                : double.PositiveInfinity;
            best = Math.Min(best, epsilon);
        }
        return Math.Max(0, best);
    }

    /// <summary>delta = min over alpha of the KL bound sqrt(1 - exp(-rdp)) and exp((alpha - 1)(rdp - epsilon + log1p(-1/alpha))) / alpha.</summary>
    public static double Delta(IReadOnlyList<double> orders, IReadOnlyList<double> rdp, double epsilon)
    {
        CheckCurve(orders, rdp);
        if (!(epsilon >= 0)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be >= 0");
        var best = double.PositiveInfinity;
        for (var i = 0; i < orders.Count; i++)
        {
            var (alpha, r) = (orders[i], rdp[i]);
            var logDelta = r == 0 ? double.NegativeInfinity : 0.5 * Math.Log(-ExpMinusOne(-r));
            if (alpha > 1.01) logDelta = Math.Min(logDelta, (alpha - 1) * (r - epsilon + Math.Log(1 - 1 / alpha)) - Math.Log(alpha));
            best = Math.Min(best, logDelta);
        }
        return Math.Min(Math.Exp(best), 1);
    }

    private static void CheckCurve(IReadOnlyList<double> orders, IReadOnlyList<double> rdp)
    {
        ArgumentNullException.ThrowIfNull(orders);
        ArgumentNullException.ThrowIfNull(rdp);
        if (orders.Count != rdp.Count) throw new ArgumentException($"{orders.Count} orders but {rdp.Count} RDP values");
        for (var i = 0; i < orders.Count; i++)
        {
            if (!(orders[i] >= 1)) throw new ArgumentException($"RDP order {orders[i]} is invalid: orders must be >= 1");
            if (!(rdp[i] >= 0)) throw new ArgumentException($"RDP value {rdp[i]} at order {orders[i]} is invalid: RDP is >= 0");
        }
    }

    // ---------------------------------------------------------------- Poisson sampling

    /// <summary>log A_alpha for 0 &lt; q &lt; 1.</summary>
    private static double PoissonLogA(double q, double sigma, double alpha) =>
        alpha == Math.Floor(alpha) ? PoissonLogAInteger(q, sigma, (int)alpha) : PoissonLogAFractional(q, sigma, alpha);

    /// <summary>log of sum_{i=0..alpha} C(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 sigma^2)).</summary>
    private static double PoissonLogAInteger(double q, double sigma, int alpha)
    {
        var logA = double.NegativeInfinity;
        for (var i = 0; i <= alpha; i++)
        {
            var term = LogBinomial(alpha, i) + i * Math.Log(q) + (alpha - i) * Math.Log(1 - q) + (i * (double)i - i) / (2 * sigma * sigma);
            logA = LogAdd(logA, term);
        }
        return logA;
    }

    /// <summary>
    /// log A_alpha for fractional alpha: A splits at z0 = sigma^2 log(1/q - 1) + 1/2 into two series of
    /// generalised binomial terms times Gaussian tails, summed until both terms fall below e^-30.
    /// </summary>
    private static double PoissonLogAFractional(double q, double sigma, double alpha)
    {
        double logA0 = double.NegativeInfinity, logA1 = double.NegativeInfinity;
        var z0 = sigma * sigma * Math.Log(1 / q - 1) + 0.5;
        // The generalised binomial coefficient C(alpha, i), kept as log|C| and its sign.
        var (logCoefficient, positive) = (0.0, true);
        for (var i = 0; ; i++)
        {
            if (i > 0)
            {
                var factor = (alpha - i + 1) / i;
                logCoefficient += Math.Log(Math.Abs(factor));
                if (factor < 0) positive = !positive;
            }
            var j = alpha - i;
            var logT0 = logCoefficient + i * Math.Log(q) + j * Math.Log(1 - q);
            var logT1 = logCoefficient + j * Math.Log(q) + i * Math.Log(1 - q);
            var logE0 = Math.Log(0.5) + LogErfc((i - z0) / (Math.Sqrt(2) * sigma));
            var logE1 = Math.Log(0.5) + LogErfc((z0 - j) / (Math.Sqrt(2) * sigma));
            var logS0 = logT0 + (i * (double)i - i) / (2 * sigma * sigma) + logE0;
            var logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
            if (positive)
            {
                logA0 = LogAdd(logA0, logS0);
                logA1 = LogAdd(logA1, logS1);
            }
            else
            {
                logA0 = LogSubtract(logA0, logS0);
                logA1 = LogSubtract(logA1, logS1);
            }
            if (Math.Max(logS0, logS1) < -30) break;
        }
        return LogAdd(logA0, logA1);
    }

    // ---------------------------------------------------------------- sampling without replacement

    /// <summary>Orders above this use the bound's O(alpha) simplification instead of its forward differences.</summary>
    private const int ExactBoundMaxOrder = 256;

    /// <summary>RDP at alpha: Theorem 27 at integer orders, Corollary 10's interpolation of the CGF between them.</summary>
    private static double WithoutReplacementRdp(double q, double sigma, double alpha)
    {
        if (alpha == Math.Floor(alpha)) return WithoutReplacementLogA(q, sigma, (int)alpha) / (alpha - 1);
        var (floor, ceiling) = ((int)Math.Floor(alpha), (int)Math.Ceiling(alpha));
        var t = alpha - floor;
        return ((1 - t) * WithoutReplacementLogA(q, sigma, floor) + t * WithoutReplacementLogA(q, sigma, ceiling)) / (alpha - 1);
    }

    /// <summary>The log of Theorem 27's bound on E[(mu/mu0)^alpha] for integer alpha.</summary>
    private static double WithoutReplacementLogA(double q, double sigma, int alpha)
    {
        if (alpha == 1) return 0;
        // The Gaussian mechanism's RDP at order x, and its cumulant generating function x (x + 1) / (2 sigma^2).
        double Rdp(double x) => x / (2 * sigma * sigma);
        double Cgf(double x) => x * (x + 1) / (2 * sigma * sigma);
        var logA = 0.0;
        var secondTerm = 2 * Math.Log(q) + LogBinomial(alpha, 2)
            + Math.Min(Math.Log(4) + Rdp(2) + Math.Log(-ExpMinusOne(-Rdp(2))), Rdp(2) + Math.Log(2));
        var deltas = alpha <= ExactBoundMaxOrder ? ForwardDifferences(Cgf, alpha) : null;
        for (var i = 2; i <= alpha; i++)
        {
            double term;
            if (i == 2)
            {
                term = secondTerm;
            }
            else if (deltas is not null)
            {
                var low = deltas[(2 * (i / 2)) - 1];
                var high = deltas[(2 * ((i + 1) / 2)) - 1];
                term = Math.Min(Math.Log(4) + 0.5 * (low + high), Math.Log(2) + Cgf(i - 1)) + i * Math.Log(q) + LogBinomial(alpha, i);
            }
            else
            {
                term = Math.Log(2) + Cgf(i - 1) + i * Math.Log(q) + LogBinomial(alpha, i);
            }
            logA = LogAdd(logA, term);
        }
        return logA;
    }

    /// <summary>
    /// log |Delta^k exp(f)| at 0 for k = 0..n+1, the forward differences Theorem 27 needs, computed in
    /// log magnitude with signs so that nothing overflows (Wang, Balle and Kasiviswanathan's recipe).
    /// </summary>
    private static double[] ForwardDifferences(Func<double, double> logFunction, int n)
    {
        var values = new double[n + 3];
        var signs = new bool[n + 3];
        Array.Fill(signs, true);
        for (var i = 1; i < n + 3; i++) values[i] = logFunction(i - 1);
        var deltas = new double[n + 2];
        for (var i = 0; i < n + 2; i++)
        {
            DifferenceInPlace(values, signs, n + 2 - i);
            deltas[i] = values[0];
        }
        return deltas;
    }

    /// <summary>values[j] = values[j+1] - values[j] for j &lt; count, on (log magnitude, sign) pairs.</summary>
    private static void DifferenceInPlace(double[] values, bool[] signs, int count)
    {
        for (var j = 0; j < count; j++)
        {
            if (signs[j] == signs[j + 1])
            {
                (signs[j], values[j]) = LogSubtractSigned(values[j + 1], values[j]);
                if (!signs[j + 1]) signs[j] = !signs[j];
            }
            else
            {
                values[j] = LogAdd(values[j], values[j + 1]);
                signs[j] = signs[j + 1];
            }
        }
    }

    // ---------------------------------------------------------------- log-space arithmetic

    private static double LogAdd(double logX, double logY)
    {
        var (low, high) = (Math.Min(logX, logY), Math.Max(logX, logY));
        return double.IsNegativeInfinity(low) ? high : Math.Log(1 + Math.Exp(low - high)) + high;
    }

    /// <summary>log(exp(x) - exp(y)) for x &gt;= y.</summary>
    private static double LogSubtract(double logX, double logY)
    {
        if (logX < logY) throw new InvalidOperationException("log-space subtraction went negative: the RDP series did not converge");
        if (double.IsNegativeInfinity(logY)) return logX;
        if (logX == logY) return double.NegativeInfinity;
        var difference = ExpMinusOne(logX - logY);
        return double.IsPositiveInfinity(difference) ? logX : Math.Log(difference) + logY;
    }

    /// <summary>(sign, log |exp(x) - exp(y)|).</summary>
    private static (bool Positive, double Log) LogSubtractSigned(double logX, double logY) =>
        logX > logY ? (true, logX + Math.Log(1 - Math.Exp(logY - logX)))
        : logX < logY ? (false, logY + Math.Log(1 - Math.Exp(logX - logY)))
        : (true, double.NegativeInfinity);

    private static double LogBinomial(int n, int k) => SpecialFunctions.GammaLn(n + 1) - SpecialFunctions.GammaLn(k + 1) - SpecialFunctions.GammaLn(n - k + 1);

    private static double ExpMinusOne(double x) => Math.Abs(x) < 1e-5 ? x + x * x / 2 + x * x * x / 6 : Math.Exp(x) - 1;

    /// <summary>log(erfc(x)), accurate far into the tail where erfc underflows (its asymptotic series past x = 10).</summary>
    private static double LogErfc(double x)
    {
        if (x < 10) return Math.Log(SpecialFunctions.Erfc(x));
        var inverseSquare = 1 / (x * x);
        return -Math.Log(Math.PI) / 2 - Math.Log(x) - x * x
            - 0.5 * inverseSquare + 0.625 * inverseSquare * inverseSquare
            - 37.0 / 24.0 * Math.Pow(inverseSquare, 3) + 353.0 / 64.0 * Math.Pow(inverseSquare, 4);
    }
}
