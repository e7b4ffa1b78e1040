using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Host;

namespace FedLora.Kernels.Tests;

/// <summary>The host backends' memory: zeroed on allocation and aligned as the kernels assume.</summary>
public sealed class HostBufferTests
{
    [Theory]
    [InlineData(0, 64)]
    [InlineData(1, 64)]
    [InlineData(17, 64)]
    [InlineData(524_287, 64)] // one float short of 2 MiB
    [InlineData(524_288, 2 << 20)] // 2 MiB: huge-page aligned
    [InlineData(3_000_001, 2 << 20)]
    public void Allocate_GivesZeroedMemoryAlignedToItsSize(int length, long alignment)
    {
        using var backend = new CpuBackend();
        using var buffer = backend.Allocate(length);
        ref var first = ref MemoryMarshal.GetReference(buffer.All.Span());
        var address = (long)Unsafe.ByteOffset(ref Unsafe.NullRef<float>(), ref first);
        Assert.Equal(0, address % alignment);
        var values = backend.ToArray(buffer);
        Assert.Equal(length, values.Length);
        Assert.All(values, v => Assert.Equal(0f, v));
    }
}
