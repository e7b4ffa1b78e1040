using FedLora.Kernels.OpenCl;
using FedLora.Kernels.OpenCl.Native;

namespace FedLora.Kernels.Tests.OpenCl;

/// <summary>The native binding and device discovery: errors name their OpenCL code, builds report their log.</summary>
public class OpenClBindingTests
{
    private static OpenClBackend Backend => (OpenClBackend)TestBackends.Get("opencl");

    [Fact]
    public void OpenCl_Platform_IsAvailableWhenRequired()
    {
        // CI sets FEDLORA_REQUIRE_OPENCL=1: there, a machine without a usable OpenCL device is a failure.
        Assert.True(OpenClTestEnvironment.Available || !OpenClTestEnvironment.Required,
            "FEDLORA_REQUIRE_OPENCL=1 but no OpenCL device is usable: " + OpenClTestEnvironment.Reason);
    }

    [OpenClFact]
    public void Devices_List_DescribesEveryDevice()
    {
        var devices = OpenClDevices.List();
        Assert.NotEmpty(devices);
        foreach (var device in devices)
        {
            Assert.False(string.IsNullOrWhiteSpace(device.Name));
            Assert.StartsWith("OpenCL ", device.Version, StringComparison.Ordinal);
            Assert.True(device.ComputeUnits >= 1, device.ToString());
            Assert.True(device.MaxWorkGroupSize >= 1, device.ToString());
            Assert.True(device.GlobalMemoryBytes > 0, device.ToString());
            Assert.Equal($"opencl:{device.PlatformIndex}:{device.DeviceIndex}", device.Spec);
        }
        Assert.Contains(OpenClDevices.Default(), devices);
    }

    [OpenClFact]
    public void BuildProgram_SyntaxError_ThrowsBuildFailureWithLog()
    {
        var error = Assert.Throws<OpenClException>(() =>
            OpenClProgram.Build(Backend.ContextHandle, Backend.DeviceHandle, "broken", "", "__kernel void broken(__global float* x) { x[0] = undeclared_name; }"));
        Assert.Equal(NativeMethods.CL_BUILD_PROGRAM_FAILURE, error.ErrorCode);
        Assert.Equal("CL_BUILD_PROGRAM_FAILURE", error.ErrorName);
        Assert.Equal("clBuildProgram", error.Function);
        Assert.Contains("CL_BUILD_PROGRAM_FAILURE", error.Message, StringComparison.Ordinal);
        // The compiler's log names the offending identifier.
        Assert.Contains("undeclared_name", error.Message, StringComparison.Ordinal);
    }

    [OpenClFact]
    public void SetKernelArg_IndexBeyondSignature_NamesInvalidArgIndex()
    {
        using var program = OpenClProgram.Build(Backend.ContextHandle, Backend.DeviceHandle, "tiny", "",
            "__kernel void tiny(__global float* x, const int n) { if (get_global_id(0) < n) x[get_global_id(0)] = 1.0f; }");
        var kernel = program.Kernel("tiny");
        var error = Assert.Throws<OpenClException>(() => ((KernelArg)5).Set(kernel, 2));
        Assert.Equal("CL_INVALID_ARG_INDEX", error.ErrorName);
        Assert.Contains("CL_INVALID_ARG_INDEX", error.Message, StringComparison.Ordinal);
        Assert.Contains("tiny", error.Message, StringComparison.Ordinal);
    }

    [OpenClFact]
    public void CreateKernel_UnknownName_NamesInvalidKernelName()
    {
        using var program = OpenClProgram.Build(Backend.ContextHandle, Backend.DeviceHandle, "tiny", "", "__kernel void tiny(__global float* x) { x[0] = 1.0f; }");
        var error = Assert.Throws<OpenClException>(() => program.Kernel("missing"));
        Assert.Equal("CL_INVALID_KERNEL_NAME", error.ErrorName);
    }

    [Theory]
    [InlineData(-5, "CL_OUT_OF_RESOURCES")]
    [InlineData(-11, "CL_BUILD_PROGRAM_FAILURE")]
    [InlineData(-54, "CL_INVALID_WORK_GROUP_SIZE")]
    [InlineData(-1001, "CL_PLATFORM_NOT_FOUND_KHR")]
    [InlineData(-9999, "unknown OpenCL error -9999")]
    public void Check_ErrorStatus_ThrowsExceptionNamingTheCode(int status, string name)
    {
        var error = Assert.Throws<OpenClException>(() => NativeMethods.Check(status, "clSomething"));
        Assert.Equal(status, error.ErrorCode);
        Assert.Equal(name, error.ErrorName);
        Assert.Contains(name, error.Message, StringComparison.Ordinal);
        Assert.Contains("clSomething", error.Message, StringComparison.Ordinal);
    }

    [OpenClFact]
    public void Create_AbsentDevice_ListsTheAvailableOnes()
    {
        var error = Assert.Throws<OpenClException>(() => OpenClBackend.Create(97, 0));
        Assert.Contains("opencl:97:0", error.Message, StringComparison.Ordinal);
        Assert.Contains(OpenClDevices.List()[0].Spec, error.Message, StringComparison.Ordinal);
    }

    [OpenClFact]
    public void Allocate_BeyondDeviceLimit_ThrowsOpenClException()
    {
        var error = Assert.Throws<OpenClException>(() => Backend.Allocate(int.MaxValue));
        Assert.Contains("CL_DEVICE_MAX_MEM_ALLOC_SIZE", error.Message, StringComparison.Ordinal);
    }

    [OpenClFact]
    public void Allocate_New_IsZeroAndRoundTrips()
    {
        using var buffer = Backend.Allocate(1031);
        Assert.All(Backend.ToArray(buffer), value => Assert.Equal(0f, value));
        var values = Enumerable.Range(0, 1031).Select(i => i * 0.5f - 3f).ToArray();
        Backend.Upload(values, buffer);
        Assert.Equal(values, Backend.ToArray(buffer));
        Assert.Equal(values.AsSpan(17, 100).ToArray(), Backend.ToArray(buffer.View(17, 100)));
        using var empty = Backend.Allocate(0);
        Assert.Empty(Backend.ToArray(empty));
    }

    [OpenClFact]
    public void Description_NamesDeviceAndGemmTiling()
    {
        Assert.Contains(Backend.Device.Name, Backend.Description, StringComparison.Ordinal);
        Assert.Contains("GEMM", Backend.Description, StringComparison.Ordinal);
        Assert.Equal(Backend.Device.Spec, Backend.Name);
    }

    [OpenClFact]
    public void Ops_AfterDispose_ThrowObjectDisposed()
    {
        var backend = OpenClBackend.Create();
        var buffer = backend.Allocate(17);
        backend.Scale(2f, buffer);
        backend.Dispose();
        Assert.Throws<ObjectDisposedException>(() => backend.Scale(2f, buffer));
        Assert.Throws<ObjectDisposedException>(() => backend.Fill(buffer, 1f));
        Assert.Throws<ObjectDisposedException>(() => backend.ToArray(buffer));
        Assert.Throws<ObjectDisposedException>(backend.Synchronize);
        buffer.Dispose();
    }
}
