using FedLora.Federation;
namespace FedLora.Server;

/// <summary>The most bytes an upload may take, derived from what its assignment expects: no client can make the server read more.</summary>
public static class UpdateLimits
{
    /// <summary>Header bytes allowed per tensor beyond its name (dtype, shape, offsets as JSON).</summary>
    public const int HeaderBytesPerTensor = 128;

    /// <summary>Header bytes allowed on top (length prefix, braces, alignment padding).</summary>
    public const int HeaderBytesSlack = 1024;

    /// <summary>
    /// The tensors of <paramref name="assignment"/>'s update at its assigned rank (F32 A (r,C) if trained, B (O,r),
    /// I32 index sets (r) under FSLoRA) plus a header allowance of <see cref="HeaderBytesPerTensor"/> bytes and the
    /// name per tensor and <see cref="HeaderBytesSlack"/> bytes in all.
    /// </summary>
    public static long ExpectedBytes(ClientAssignment assignment)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        var (data, header) = (0L, (long)HeaderBytesSlack);
        foreach (var module in assignment.Modules)
        {
            if (assignment.Trainable == TrainableFactors.Both)
            {
                data += 4L * assignment.Rank * module.InFeatures;
                header += HeaderBytesPerTensor + WireTensor.LoraA(module.Name).Length;
            }
            data += 4L * module.OutFeatures * assignment.Rank;
            header += HeaderBytesPerTensor + WireTensor.LoraB(module.Name).Length;
            if (assignment.RankIndices is not null)
            {
                data += 4L * assignment.Rank;
                header += HeaderBytesPerTensor + WireTensor.RankIndices(module.Name).Length;
            }
        }
        return data + header;
    }

    /// <summary>The header part of <see cref="ExpectedBytes"/>: the most header bytes the update's parser will read.</summary>
    public static long HeaderBytes(ClientAssignment assignment)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        var tensors = assignment.Modules.Sum(m => (assignment.Trainable == TrainableFactors.Both ? HeaderBytesPerTensor + WireTensor.LoraA(m.Name).Length : 0)
            + HeaderBytesPerTensor + WireTensor.LoraB(m.Name).Length
            + (assignment.RankIndices is null ? 0 : HeaderBytesPerTensor + WireTensor.RankIndices(m.Name).Length));
        return HeaderBytesSlack + tensors;
    }
}
