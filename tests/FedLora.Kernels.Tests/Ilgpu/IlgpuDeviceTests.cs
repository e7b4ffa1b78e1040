using FedLora.Kernels.Ilgpu;

namespace FedLora.Kernels.Tests.Ilgpu;

/// <summary>ILGPU's device list, the backend's memory and its life cycle, on ILGPU's CPU accelerator.</summary>
public class IlgpuDeviceTests
{
    [Fact]
    public void List_StartsWithTheCpuAccelerator_AndNamesEveryDeviceBySpec()
    {
        var devices = IlgpuDevices.List();
        Assert.Equal(IlgpuDevices.CpuSpec, devices[0].Spec);
        Assert.True(devices[0].MaxGroupSize >= 256, $"the CPU accelerator allows groups of {devices[0].MaxGroupSize} threads; the GEMM's GPU shape needs 256");
        foreach (var device in devices.Skip(1))
        {
            Assert.Matches("^(cuda|opencl):[0-9]+$", device.Spec);
            Assert.True(device.MemoryBytes > 0 && device.MaxGroupSize > 0, $"{device.Spec}: memory {device.MemoryBytes}, groups {device.MaxGroupSize}");
        }
    }

    [Fact]
    public void UnusableOpenClDevices_EachSaysWhy()
    {
        foreach (var device in IlgpuDevices.UnusableOpenClDevices())
        {
            Assert.False(string.IsNullOrWhiteSpace(device.Name));
            Assert.Matches("ILGPU needs|generic address space|does not accept", device.Reason);
            Assert.DoesNotContain(IlgpuDevices.List(), usable => usable.Name == device.Name);
        }
    }

    [Fact]
    public void Allocate_New_IsZeroAndRoundTrips()
    {
        using var backend = IlgpuBackend.Create(IlgpuDevices.CpuSpec);
        using var buffer = backend.Allocate(1031);
        Assert.All(backend.ToArray(buffer), value => Assert.Equal(0f, value));
        var values = Enumerable.Range(0, 1031).Select(i => i * 0.5f - 3f).ToArray();
        backend.Upload(values, buffer);
        Assert.Equal(values, backend.ToArray(buffer));
        Assert.Equal(values.AsSpan(17, 100).ToArray(), backend.ToArray(buffer.View(17, 100)));
        using var empty = backend.Allocate(0);
        Assert.Empty(backend.ToArray(empty));
    }

    [Fact]
    public void Description_NamesTheAcceleratorAndItsGroups()
    {
        using var backend = IlgpuBackend.Create(IlgpuDevices.CpuSpec);
        Assert.Equal(IlgpuDevices.CpuSpec, backend.Name);
        Assert.Contains("CPU accelerator", backend.Description, StringComparison.Ordinal);
        Assert.Contains($"groups of up to {IlgpuDevices.List()[0].MaxGroupSize} threads", backend.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void Ops_AfterDispose_ThrowObjectDisposed()
    {
        var backend = IlgpuBackend.Create(IlgpuDevices.CpuSpec);
        var buffer = backend.Allocate(17);
        backend.Scale(2f, buffer);
        backend.Dispose();
        Assert.Throws<ObjectDisposedException>(() => backend.Scale(2f, buffer));
        Assert.Throws<ObjectDisposedException>(() => backend.ToArray(buffer));
        Assert.Throws<ObjectDisposedException>(backend.Synchronize);
        buffer.Dispose();
    }
}
