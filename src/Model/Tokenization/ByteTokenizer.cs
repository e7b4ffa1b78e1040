using System.Text;

namespace FedLora.Model.Tokenization;

/// <summary>
/// FedLora's tokenizer: token i &lt; 256 is byte i of the UTF-8 text, token 256 is end-of-text.
/// Every string encodes, nothing is out of vocabulary, and the vocabulary is V = 257.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    /// <summary>The one instance (the tokenizer has no state).</summary>
    public static ByteTokenizer Instance { get; } = new();

    private ByteTokenizer()
    {
    }

    /// <summary>The end-of-text token, which closes every training example.</summary>
    public const int EndOfText = 256;

    /// <summary>The vocabulary size V: 256 bytes plus end-of-text.</summary>
    public const int VocabSize = 257;

    /// <summary>How <see cref="Decode"/> renders the end-of-text token (GPT-2's spelling).</summary>
    public const string EndOfTextText = "<|endoftext|>";

    /// <summary>The UTF-8 bytes of <paramref name="text"/> as tokens (no end-of-text is added).</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text);
        var tokens = new int[bytes.Length];
        for (var i = 0; i < bytes.Length; i++) tokens[i] = bytes[i];
        return tokens;
    }

    /// <summary>
    /// The text of <paramref name="tokens"/>: byte runs decoded as UTF-8, with each invalid or
    /// truncated sequence replaced by U+FFFD (models emit those), and end-of-text rendered as
    /// <see cref="EndOfTextText"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside [0, 257).</exception>
    public string Decode(ReadOnlySpan<int> tokens)
    {
        var text = new StringBuilder(tokens.Length);
        var run = new byte[tokens.Length];
        var length = 0;
        for (var i = 0; i < tokens.Length; i++)
        {
            var token = tokens[i];
            if ((uint)token >= VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), token, $"token {i} is outside the byte tokenizer's vocabulary [0, {VocabSize})");
            }
            if (token == EndOfText)
            {
                text.Append(Encoding.UTF8.GetString(run, 0, length)).Append(EndOfTextText);
                length = 0;
            }
            else
            {
                run[length++] = (byte)token;
            }
        }
        return text.Append(Encoding.UTF8.GetString(run, 0, length)).ToString();
    }

    int ITokenizer.VocabSize => VocabSize;

    int ITokenizer.EndOfText => EndOfText;
}
