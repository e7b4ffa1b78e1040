namespace FedLora.Model.Tokenization;

/// <summary>
/// Text to token ids and back, for one model's vocabulary. The byte-level tokenizer of the shipped
/// model is one; a pretrained model's tokenizer (GPT-2's BPE) is another.
/// </summary>
public interface ITokenizer
{
    /// <summary>The vocabulary size V: every token id lies in [0, V).</summary>
    int VocabSize { get; }

    /// <summary>The end-of-text token, which closes every training example.</summary>
    int EndOfText { get; }

    /// <summary>The tokens of <paramref name="text"/> (no end-of-text is added).</summary>
    int[] Encode(string text);

    /// <summary>The text of <paramref name="tokens"/>; the end-of-text token is rendered in the tokenizer's own spelling.</summary>
    string Decode(ReadOnlySpan<int> tokens);
}
