namespace FedLora.Model;

/// <summary>Draws the next token from a row of logits: temperature scaling, then top-k filtering.</summary>
public sealed class Sampler
{
    private readonly Random _random;
    private float[] _probabilities = [];

    /// <summary>A sampler with its own seeded random source.</summary>
    public Sampler(float temperature, int topK, int seed)
    {
        if (!(temperature >= 0) || !float.IsFinite(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "the temperature must be finite and >= 0 (0: always the most likely token)");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(topK);
        Temperature = temperature;
        TopK = topK;
        _random = new Random(seed);
    }

    /// <summary>Logits are divided by it; 0 means greedy decoding.</summary>
    public float Temperature { get; }

    /// <summary>Only the k most likely tokens can be drawn; 0 means no limit.</summary>
    public int TopK { get; }

    /// <summary>The next token for one row of logits (V).</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("there are no logits to sample from", nameof(logits));
        var best = 0;
        for (var i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        if (Temperature == 0 || TopK == 1) return best;

        if (_probabilities.Length != logits.Length) _probabilities = new float[logits.Length];
        var threshold = float.NegativeInfinity;
        if (TopK > 0 && TopK < logits.Length)
        {
            logits.CopyTo(_probabilities);
            Array.Sort(_probabilities);
            threshold = _probabilities[^TopK];
        }
        double sum = 0;
        for (var i = 0; i < logits.Length; i++)
        {
            var weight = logits[i] < threshold ? 0 : Math.Exp((logits[i] - logits[best]) / Temperature);
            _probabilities[i] = (float)weight;
            sum += weight;
        }
        var draw = _random.NextDouble() * sum;
        for (var i = 0; i < logits.Length; i++)
        {
            draw -= _probabilities[i];
            if (draw < 0) return i;
        }
        return best;
    }
}
