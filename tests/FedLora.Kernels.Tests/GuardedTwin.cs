namespace FedLora.Kernels.Tests;

/// <summary>
/// A <see cref="Twin"/> whose device-side tensors are views at a non-zero offset inside a larger
/// buffer, with sentinel values on both sides: every op is then exercised with view offsets, and a
/// kernel that reads or writes outside its view is caught (reads pull in the sentinel, writes change it).
/// </summary>
public sealed class GuardedTwin : IDisposable
{
    private const int Guard = 3;
    private const float Sentinel = -7777.25f;
    private readonly List<DeviceBuffer> _buffers = [];
    private readonly List<(DeviceBuffer Buffer, int Length)> _guarded = [];

    /// <summary>Compares backend <paramref name="backend"/> of <see cref="TestBackends"/> with the Reference.</summary>
    public GuardedTwin(string backend, int seed = 1234)
    {
        Twin = new Twin(backend, seed);
        Device = Twin.Device;
    }

    /// <summary>Compares <paramref name="device"/>, a backend the caller owns, with the Reference.</summary>
    public GuardedTwin(Backend device, int seed = 1234)
    {
        Twin = new Twin("reference", seed);
        Device = device;
    }

    /// <summary>The Reference side and the random source; its own device side is not used.</summary>
    public Twin Twin { get; }
    public Backend Reference => Twin.Reference;
    public Backend Device { get; }

    public TwinTensor Tensor(float[] values)
    {
        var reference = Reference.Allocate(values.Length);
        _buffers.Add(reference);
        Reference.Upload(values, reference);

        var padded = new float[values.Length + 2 * Guard];
        Array.Fill(padded, Sentinel);
        values.CopyTo(padded, Guard);
        var device = Device.Allocate(padded.Length);
        _buffers.Add(device);
        _guarded.Add((device, values.Length));
        Device.Upload(padded, device);
        return new TwinTensor(reference, device.View(Guard, values.Length));
    }

    public TwinTensor Random(int length, float scale = 1f) => Tensor(Twin.RandomValues(length, scale));

    public TwinTensor Zeros(int length) => Tensor(new float[length]);

    /// <summary>Runs <paramref name="op"/> on Reference, then on the device; <c>pick</c> selects each tensor's side.</summary>
    public void Both(Action<Backend, Func<TwinTensor, BufferView>> op)
    {
        op(Reference, t => t.Reference);
        op(Device, t => t.Device);
    }

    /// <summary>Compares the tensor's two sides and checks that no guard around any device view changed.</summary>
    public void AssertClose(TwinTensor tensor, float abs, float rel, string label)
    {
        Twin.AssertClose(Reference.ToArray(tensor.Reference), Device.ToArray(tensor.Device), abs, rel, $"{Device.Name}: {label}");
        AssertGuardsIntact();
    }

    public void AssertGuardsIntact()
    {
        foreach (var (buffer, length) in _guarded)
        {
            var all = Device.ToArray(buffer);
            for (var i = 0; i < Guard; i++)
            {
                Assert.True(all[i] == Sentinel, $"a kernel wrote before a view of {length} floats (guard [{i}] = {all[i]})");
                Assert.True(all[Guard + length + i] == Sentinel, $"a kernel wrote past a view of {length} floats (guard [{i}] = {all[Guard + length + i]})");
            }
        }
    }

    public void Dispose()
    {
        foreach (var buffer in _buffers) buffer.Dispose();
        Twin.Dispose();
    }
}
