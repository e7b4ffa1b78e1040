using FedLora.Kernels.OpenCl;

namespace FedLora.Kernels.Tests.OpenCl;

/// <summary>
/// Whether OpenCL tests run here. Outside CI they are skipped when no OpenCL device exists; with
/// FEDLORA_REQUIRE_OPENCL=1 (set by .ci/run) they always run, so a missing runtime fails them.
/// </summary>
public static class OpenClTestEnvironment
{
    private static readonly Lazy<(bool Available, string Reason)> Probe = new(() =>
    {
        var available = OpenClDevices.IsAvailable(out var reason);
        return (available, reason);
    });

    public static bool Required => Environment.GetEnvironmentVariable("FEDLORA_REQUIRE_OPENCL") == "1";

    public static bool Available => Probe.Value.Available;

    /// <summary>Why no device is available (the install hint), empty when one is.</summary>
    public static string Reason => Probe.Value.Reason;

    public static bool ShouldRun => Required || Available;

    public static string SkipReason => ShouldRun ? "" : "no OpenCL device (set FEDLORA_REQUIRE_OPENCL=1 to fail instead): " + Reason;
}

/// <summary>A fact that is skipped when OpenCL tests do not run here (see <see cref="OpenClTestEnvironment"/>).</summary>
public sealed class OpenClFactAttribute : FactAttribute
{
    public OpenClFactAttribute()
    {
        if (!OpenClTestEnvironment.ShouldRun) Skip = OpenClTestEnvironment.SkipReason;
    }
}

/// <summary>A theory that is skipped when OpenCL tests do not run here (see <see cref="OpenClTestEnvironment"/>).</summary>
public sealed class OpenClTheoryAttribute : TheoryAttribute
{
    public OpenClTheoryAttribute()
    {
        if (!OpenClTestEnvironment.ShouldRun) Skip = OpenClTestEnvironment.SkipReason;
    }
}
