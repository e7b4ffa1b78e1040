namespace FedLora.Model;

/// <summary>The shape of a GPT-2-style decoder.</summary>
/// <param name="VocabSize">V: 257 for the byte-level tokenizer (256 bytes + end-of-text).</param>
/// <param name="ContextLength">maxT: the longest sequence (rows of the position table).</param>
/// <param name="Layers">L: transformer blocks.</param>
/// <param name="Channels">C: the residual stream's width.</param>
/// <param name="Heads">NH: attention heads; C must be a multiple of it.</param>
public sealed record GptConfig(int VocabSize, int ContextLength, int Layers, int Channels, int Heads)
{
    /// <summary>Throws when a dimension is not positive or C is not a multiple of NH.</summary>
    public void Validate()
    {
        if (VocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(VocabSize), VocabSize, "the vocabulary size must be > 0");
        if (ContextLength <= 0) throw new ArgumentOutOfRangeException(nameof(ContextLength), ContextLength, "the context length must be > 0");
        if (Layers <= 0) throw new ArgumentOutOfRangeException(nameof(Layers), Layers, "the number of layers must be > 0");
        if (Channels <= 0) throw new ArgumentOutOfRangeException(nameof(Channels), Channels, "the number of channels must be > 0");
        if (Heads <= 0 || Channels % Heads != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(Heads), Heads, $"the number of heads must be > 0 and divide the channels ({Channels})");
        }
    }

    /// <summary>Number of base parameters (the tied head adds none).</summary>
    public long ParameterCount
    {
        get
        {
            long c = Channels;
            long perLayer = 2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c);
            return (long)VocabSize * c + (long)ContextLength * c + Layers * perLayer + 2 * c;
        }
    }
}
