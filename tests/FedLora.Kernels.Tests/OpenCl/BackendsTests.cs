using FedLora.Kernels.Cpu;
using FedLora.Kernels.OpenCl;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels.Tests.OpenCl;

/// <summary>Backends.Create, the parser behind the command line's --device option.</summary>
public class BackendsTests
{
    [Theory]
    [InlineData("cpu", typeof(CpuBackend))]
    [InlineData(" CPU ", typeof(CpuBackend))]
    [InlineData("reference", typeof(ReferenceBackend))]
    public void Create_HostSpecs_MakeTheirBackend(string spec, Type expected)
    {
        using var backend = Backends.Create(spec);
        Assert.IsType(expected, backend);
    }

    [OpenClTheory]
    [InlineData("opencl")]
    [InlineData("OpenCL")]
    [InlineData("opencl:0:0")]
    public void Create_OpenClSpecs_OpenADevice(string spec)
    {
        using var backend = Backends.Create(spec);
        var openCl = Assert.IsType<OpenClBackend>(backend);
        Assert.StartsWith("opencl:", openCl.Name, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("gpu")]
    [InlineData("")]
    [InlineData("opencl:0")]
    [InlineData("opencl:a:b")]
    [InlineData("opencl:-1:0")]
    [InlineData("opencl:0:0:0")]
    public void Create_UnknownSpec_ListsValidChoices(string spec)
    {
        var error = Assert.Throws<ArgumentException>(() => Backends.Create(spec));
        Assert.Contains($"'{spec}'", error.Message, StringComparison.Ordinal);
        foreach (var choice in new[] { "'cpu'", "'reference'", "'opencl'", "'opencl:P:D'" }) Assert.Contains(choice, error.Message, StringComparison.Ordinal);
    }
}
