using FedLora.Kernels.Cpu;
using FedLora.Kernels.Ilgpu;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels.Tests;

/// <summary>Backends.Create, the parser behind the command line's --device option.</summary>
public class BackendsTests
{
    [Theory]
    [InlineData("cpu", typeof(CpuBackend))]
    [InlineData(" CPU ", typeof(CpuBackend))]
    [InlineData("reference", typeof(ReferenceBackend))]
    [InlineData("ilgpu-cpu", typeof(IlgpuBackend))]
    [InlineData("ILGPU-CPU", typeof(IlgpuBackend))]
    public void Create_AvailableSpecs_MakeTheirBackend(string spec, Type expected)
    {
        using var backend = Backends.Create(spec);
        Assert.IsType(expected, backend);
    }

    // A GPU spec opens the device where ILGPU finds one, and otherwise fails naming the device and what to do.
    [Theory]
    [InlineData("cuda", "cuda")]
    [InlineData("cuda:0", "cuda")]
    [InlineData("opencl", "opencl")]
    [InlineData("OpenCL:0", "opencl")]
    public void Create_GpuSpecs_OpenTheDeviceOrSayWhatIsMissing(string spec, string kind)
    {
        if (IlgpuDevices.List().Any(device => device.Spec.StartsWith(kind + ":", StringComparison.Ordinal)))
        {
            using var backend = Backends.Create(spec);
            Assert.Equal(kind + ":0", backend.Name);
            return;
        }
        var error = Assert.Throws<IlgpuDeviceException>(() => Backends.Create(spec));
        Assert.Contains($"'{spec}'", error.Message, StringComparison.Ordinal);
        Assert.Contains("fedlora devices", error.Message, StringComparison.Ordinal);
        Assert.Contains(kind == "cuda" ? "NVIDIA" : "OpenCL C 2.0", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Create_DeviceIndexPastTheLast_SaysHowManyThereAre()
    {
        var error = Assert.Throws<IlgpuDeviceException>(() => Backends.Create("cuda:97"));
        Assert.Contains("'cuda:97'", error.Message, StringComparison.Ordinal);
        Assert.Contains("fedlora devices", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("gpu")]
    [InlineData("")]
    [InlineData("opencl:0:0")]
    [InlineData("opencl:a")]
    [InlineData("cuda:-1")]
    [InlineData("ilgpu")]
    public void Create_UnknownSpec_ListsValidChoices(string spec)
    {
        var error = Assert.Throws<ArgumentException>(() => Backends.Create(spec));
        Assert.Contains($"'{spec}'", error.Message, StringComparison.Ordinal);
        foreach (var choice in new[] { "'cpu'", "'reference'", "'ilgpu-cpu'", "'cuda'", "'cuda:N'", "'opencl'", "'opencl:N'" })
        {
            Assert.Contains(choice, error.Message, StringComparison.Ordinal);
        }
    }
}
