using FedLora.Federation;
using FedLora.Lora.Safetensors;

namespace FedLora.Server;

/// <summary>Why an upload was refused: the HTTP status to answer and a message that says what was wrong.</summary>
public sealed class UploadRejectedException : Exception
{
    /// <summary>The longest message sent back; longer ones (a 1 MB tensor name, say) are cut.</summary>
    public const int MaxMessageLength = 400;

    /// <summary>Creates the exception; the message is cut to <see cref="MaxMessageLength"/> characters.</summary>
    public UploadRejectedException(int statusCode, string message) : base(Shorten(message)) => StatusCode = statusCode;

    /// <summary>Creates the exception with status 400.</summary>
    public UploadRejectedException() : this(400, "the upload was refused") { }

    /// <summary>Creates the exception with status 400.</summary>
    public UploadRejectedException(string message) : this(400, message) { }


    /// <summary>Creates the exception with status 400.</summary>
    public UploadRejectedException(string message, Exception innerException) : base(Shorten(message), innerException) => StatusCode = 400;

    /// <summary>The HTTP status code (4xx, or 503 when the server cannot save).</summary>
    public int StatusCode { get; }

    /// <summary><paramref name="message"/>, cut to <see cref="MaxMessageLength"/> characters with a note of how much was cut.</summary>
    public static string Shorten(string? message)
    {
        message ??= "";
        return message.Length <= MaxMessageLength ? message : $"{message[..MaxMessageLength]}... ({message.Length - MaxMessageLength} more characters cut)";
    }
}

/// <summary>
/// Turns an uploaded payload into a <see cref="ClientUpdate"/> only if it matches its assignment
/// exactly: the tensor names the assignment expects and no others, F32 factors of shape (r,C) and
/// (O,r) with r the assigned rank (or HetLoRA's pruned rank), I32 index sets equal to the assigned
/// ones, and every value finite. Anything else throws <see cref="UploadRejectedException"/> (400).
/// </summary>
public static class UpdateValidator
{
    /// <summary>The validated update of <paramref name="assignment"/>'s client.</summary>
    public static ClientUpdate Decode(ClientAssignment assignment, ReadOnlyMemory<byte> payload, long maxBytes)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        if (payload.Length > maxBytes) throw new UploadRejectedException(413, $"the update is {payload.Length} bytes, above the limit of {maxBytes} bytes");
        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Parse(payload, $"client {assignment.ClientId}'s update",
                new SafetensorsReadOptions { MaxFileBytes = maxBytes, MaxHeaderBytes = UpdateLimits.HeaderBytes(assignment) });
        }
        catch (SafetensorsFormatException e)
        {
            throw new UploadRejectedException($"the update is not a valid safetensors payload: {e.Message}", e);
        }
        var expected = ExpectedNames(assignment);
        foreach (var tensor in file.Tensors)
        {
            if (!expected.Contains(tensor.Name)) throw new UploadRejectedException($"unexpected tensor '{tensor.Name}': the assignment of client {assignment.ClientId} in round {assignment.Round} does not include it");
        }
        foreach (var name in expected)
        {
            if (!file.Contains(name)) throw new UploadRejectedException($"missing tensor '{name}' required by the assignment of client {assignment.ClientId} in round {assignment.Round}");
        }
        var rank = UploadedRank(assignment, file);
        var modules = new ModuleUpdate[assignment.Modules.Count];
        for (var m = 0; m < modules.Length; m++)
        {
            var module = assignment.Modules[m];
            var a = assignment.Trainable == TrainableFactors.Both ? ReadFinite(file, WireTensor.LoraA(module.Name), rank, module.InFeatures) : null;
            var b = ReadFinite(file, WireTensor.LoraB(module.Name), module.OutFeatures, rank);
            int[]? indices = null;
            if (assignment.RankIndices is { } assigned)
            {
                var name = WireTensor.RankIndices(module.Name);
                Require(file, name, SafetensorsDType.I32, rank);
                indices = file.ReadInt32s(name);
                if (!indices.AsSpan().SequenceEqual(assigned[m]))
                {
                    throw new UploadRejectedException($"tensor '{name}' holds the index set [{string.Join(", ", indices)}] but client {assignment.ClientId} was assigned [{string.Join(", ", assigned[m])}]");
                }
            }
            modules[m] = new ModuleUpdate(module, a, b, indices);
        }
        return new ClientUpdate(assignment.ClientId, assignment.Round, rank, modules);
    }

    private static HashSet<string> ExpectedNames(ClientAssignment assignment)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var module in assignment.Modules)
        {
            if (assignment.Trainable == TrainableFactors.Both) names.Add(WireTensor.LoraA(module.Name));
            names.Add(WireTensor.LoraB(module.Name));
            if (assignment.RankIndices is not null) names.Add(WireTensor.RankIndices(module.Name));
        }
        return names;
    }

    /// <summary>The rank of B in the first module, which must be the assigned rank or, under HetLoRA, its pruned rank.</summary>
    private static int UploadedRank(ClientAssignment assignment, SafetensorsFile file)
    {
        var first = assignment.Modules[0];
        var shape = file.GetInfo(WireTensor.LoraB(first.Name)).Shape;
        var rank = shape.Count == 2 ? shape[1] : -1;
        var allowed = new List<int> { assignment.Rank };
        if (assignment.Regularizer is { } regularizer) allowed.Add(regularizer.PrunedRank(assignment.Rank));
        if (!allowed.Contains(rank))
        {
            throw new UploadRejectedException(
                $"tensor '{WireTensor.LoraB(first.Name)}' has shape ({string.Join(",", shape)}) but client {assignment.ClientId} was assigned rank {string.Join(" or ", allowed.Distinct())}: B must be (O,r) = ({first.OutFeatures},{assignment.Rank})");
        }
        return rank;
    }

    private static float[] ReadFinite(SafetensorsFile file, string name, params int[] shape)
    {
        Require(file, name, SafetensorsDType.F32, shape);
        var values = file.ReadFloats(name);
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i])) throw new UploadRejectedException($"tensor '{name}' holds a non-finite value ({values[i]}) at element {i}: every value must be finite");
        }
        return values;
    }

    private static void Require(SafetensorsFile file, string name, SafetensorsDType dtype, params int[] shape)
    {
        var info = file.GetInfo(name);
        if (info.DType != dtype) throw new UploadRejectedException($"tensor '{name}' is {info.DType}, expected {dtype}");
        if (!info.HasShape(shape)) throw new UploadRejectedException($"tensor '{name}' has shape {info.ShapeText}, expected ({string.Join(",", shape)})");
    }
}
