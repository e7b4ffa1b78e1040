using System.CommandLine;
using System.Globalization;
using FedLora.Federation.Privacy;

namespace FedLora.Cli;

/// <summary>The client-level differential privacy options of simulate, compare and serve (off unless given).</summary>
internal sealed class DpOptions
{
    public Option<double?> Clip { get; } = new("--dp-clip") { Description = "Differential privacy: clip every client's update (its change, flattened over modules) to this L2 norm S" };
    public Option<double?> Noise { get; } = new("--dp-noise") { Description = "Differential privacy: noise multiplier z, Gaussian noise of standard deviation z S on the round's sum (or give --dp-epsilon)" };
    public Option<double?> Epsilon { get; } = new("--dp-epsilon") { Description = "Differential privacy: the epsilon the whole run may spend; the noise follows from it (needs --dp-delta)" };
    public Option<double?> Delta { get; } = new("--dp-delta") { Description = $"Differential privacy: delta of the guarantee (default {DpSettings.DefaultDelta.ToString(CultureInfo.InvariantCulture)} with --dp-noise)" };

    public Option<string?> Adaptive { get; } = new("--dp-adaptive")
    {
        Description = "Differential privacy: adaptive clipping (Andrew et al., 2021) from --dp-clip as the initial clip: QUANTILE[,LR[,SIGMA_B]], e.g. 0.5 (defaults: LR 0.2, SIGMA_B = clients per round / 20)",
    };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Clip, Noise, Epsilon, Delta, Adaptive }) command.Options.Add(option);
    }

    /// <summary>The settings, or null when no DP option was given; throws <see cref="UsageException"/> on a bad combination.</summary>
    public DpSettings? Read(ParseResult parse)
    {
        var (clip, noise, epsilon, delta, adaptive) = (parse.GetValue(Clip), parse.GetValue(Noise), parse.GetValue(Epsilon), parse.GetValue(Delta), parse.GetValue(Adaptive));
        if (clip is null && noise is null && epsilon is null && delta is null && adaptive is null) return null;
        if (clip is null) throw new UsageException("differential privacy needs --dp-clip S (the L2 norm every client's update is clipped to)");
        if (noise is null && epsilon is null) throw new UsageException("--dp-clip needs --dp-noise z, or --dp-epsilon E with --dp-delta D");
        var settings = new DpSettings { Clip = clip.Value, NoiseMultiplier = noise, TargetEpsilon = epsilon, Delta = delta, Adaptive = ParseAdaptive(adaptive) };
        try
        {
            settings.Validate();
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--dp-*: {e.Message}");
        }
        return settings;
    }

    private static AdaptiveClipping? ParseAdaptive(string? text)
    {
        if (text is null) return null;
        var values = CommonOptions.ParseDoubles(text, "--dp-adaptive");
        if (values.Length is < 1 or > 3) throw new UsageException($"--dp-adaptive '{text}': give QUANTILE[,LR[,SIGMA_B]], e.g. 0.5 or 0.5,0.2");
        var defaults = new AdaptiveClipping();
        return new AdaptiveClipping(values[0], values.Length > 1 ? values[1] : defaults.LearningRate, values.Length > 2 ? values[2] : null);
    }

    /// <summary>Epsilon for a table cell: "inf" when unbounded.</summary>
    public static string Format(double epsilon) =>
        double.IsPositiveInfinity(epsilon) ? "inf" : epsilon.ToString("0.00", CultureInfo.InvariantCulture);
}
