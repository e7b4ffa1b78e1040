using FedLora.Federation;
using FedLora.Lora.Safetensors;

namespace FedLora.Runtime;

/// <summary>Tensors on the wire: one safetensors payload per message, as the networked run sends them.</summary>
public static class WirePayload
{
    /// <summary>The payload holding <paramref name="tensors"/>.</summary>
    public static byte[] Serialize(IEnumerable<WireTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var writer = new SafetensorsWriter();
        foreach (var tensor in tensors)
        {
            var shape = tensor.Shape.ToArray();
            if (tensor.Floats is { } floats) writer.AddFloats(tensor.Name, floats, shape);
            else writer.AddInt32s(tensor.Name, tensor.Integers!, shape);
        }
        return writer.ToArray();
    }

    /// <summary>The size in bytes of the payload holding <paramref name="tensors"/>; 0 when there are none (nothing is sent).</summary>
    public static long SizeOf(IReadOnlyCollection<WireTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return tensors.Count == 0 ? 0 : Serialize(tensors).LongLength;
    }
}
