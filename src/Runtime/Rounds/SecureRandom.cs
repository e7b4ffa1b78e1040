using System.Security.Cryptography;

namespace FedLora.Runtime;

/// <summary>A <see cref="Random"/> over the operating system's cryptographic generator: DP noise nobody can predict from the job's seed.</summary>
internal sealed class SecureRandom : Random
{
    /// <summary>A uniform double in [0, 1) from 53 random bits.</summary>
    public override double NextDouble() => (RandomNumberGenerator.GetInt32(1 << 26) * (double)(1 << 27) + RandomNumberGenerator.GetInt32(1 << 27)) / (1L << 53);

    /// <inheritdoc/>
    protected override double Sample() => NextDouble();

    /// <inheritdoc/>
    public override int Next() => RandomNumberGenerator.GetInt32(int.MaxValue);

    /// <inheritdoc/>
    public override int Next(int maxValue) => RandomNumberGenerator.GetInt32(maxValue);

    /// <inheritdoc/>
    public override int Next(int minValue, int maxValue) => RandomNumberGenerator.GetInt32(minValue, maxValue);

    /// <inheritdoc/>
    public override void NextBytes(byte[] buffer) => RandomNumberGenerator.Fill(buffer);

    /// <inheritdoc/>
    public override void NextBytes(Span<byte> buffer) => RandomNumberGenerator.Fill(buffer);
}
