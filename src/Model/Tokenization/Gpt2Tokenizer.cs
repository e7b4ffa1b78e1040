using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace FedLora.Model.Tokenization;

/// <summary>
/// GPT-2's byte-level BPE, from a Hugging Face folder's <c>vocab.json</c> + <c>merges.txt</c> or its
/// <c>tokenizer.json</c>, run by Microsoft.ML.Tokenizers (its <see cref="CodeGenTokenizer"/> is GPT-2's
/// algorithm). No prefix space, no begin- or end-of-sequence token is added: the callers add
/// end-of-text where an example ends.
/// </summary>
public sealed class Gpt2Tokenizer : ITokenizer
{
    private readonly CodeGenTokenizer _bpe;

    private Gpt2Tokenizer(CodeGenTokenizer bpe, int vocabSize, int endOfText)
    {
        _bpe = bpe;
        VocabSize = vocabSize;
        EndOfText = endOfText;
    }

    /// <summary>The model's vocabulary size V (at least the tokenizer's; models may pad it).</summary>
    public int VocabSize { get; }

    /// <summary>The end-of-text token (GPT-2's <c>&lt;|endoftext|&gt;</c>, 50256 in gpt2), from the model's config.</summary>
    public int EndOfText { get; }

    /// <summary>
    /// The tokenizer files of the Hugging Face folder <paramref name="directory"/>: vocab.json and
    /// merges.txt, or else tokenizer.json. <paramref name="vocabSize"/> and <paramref name="endOfText"/>
    /// come from the model's config; every id of the vocabulary must lie below <paramref name="vocabSize"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The files are missing, malformed or do not fit the model.</exception>
    public static Gpt2Tokenizer FromFolder(string directory, int vocabSize, int endOfText)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var vocab = Path.Combine(directory, "vocab.json");
        var merges = Path.Combine(directory, "merges.txt");
        var combined = Path.Combine(directory, "tokenizer.json");
        CodeGenTokenizer bpe;
        string source;
        try
        {
            if (File.Exists(vocab) && File.Exists(merges))
            {
                source = $"{vocab} and {merges}";
                using var vocabStream = File.OpenRead(vocab);
                using var mergesStream = File.OpenRead(merges);
                bpe = CodeGenTokenizer.Create(vocabStream, mergesStream, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
            }
            else if (File.Exists(combined))
            {
                source = combined;
                var (vocabJson, mergesText) = SplitTokenizerJson(combined);
                using var vocabStream = new MemoryStream(vocabJson);
                using var mergesStream = new MemoryStream(mergesText);
                bpe = CodeGenTokenizer.Create(vocabStream, mergesStream, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
            }
            else
            {
                throw new InvalidDataException($"{directory}: no tokenizer: the folder needs vocab.json and merges.txt, or tokenizer.json (GPT-2's byte-level BPE)");
            }
        }
        catch (Exception e) when (e is JsonException or ArgumentException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{directory}: the tokenizer files cannot be read as GPT-2's BPE: {e.Message}", e);
        }
        var largest = bpe.Vocabulary.Values.DefaultIfEmpty(-1).Max();
        if (largest >= vocabSize)
        {
            throw new InvalidDataException($"{source}: the tokenizer has id {largest}, outside the model's vocabulary of {vocabSize} (config.json vocab_size)");
        }
        if ((uint)endOfText >= (uint)vocabSize)
        {
            throw new InvalidDataException($"{directory}: the end-of-text id {endOfText} (config.json eos_token_id) is outside the vocabulary of {vocabSize}");
        }
        return new Gpt2Tokenizer(bpe, vocabSize, endOfText);
    }

    /// <inheritdoc/>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return [.. _bpe.EncodeToIds(text, addPrefixSpace: false, addBeginningOfSentence: false, addEndOfSentence: false)];
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside [0, V).</exception>
    public string Decode(ReadOnlySpan<int> tokens)
    {
        for (var i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i] >= (uint)VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[i], $"token {i} is outside the vocabulary [0, {VocabSize})");
            }
        }
        return _bpe.Decode(tokens.ToArray(), hasPrefixSpace: false, considerSpecialTokens: true) ?? "";
    }

    /// <summary>tokenizer.json's model.vocab as a vocab.json and its model.merges as a merges.txt.</summary>
    private static (byte[] Vocab, byte[] Merges) SplitTokenizerJson(string path)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(path));
        if (!document.RootElement.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object
            || !model.TryGetProperty("type", out var type) || type.GetString() != "BPE"
            || !model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object
            || !model.TryGetProperty("merges", out var merges) || merges.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException($"{path}: not a BPE tokenizer.json (it needs model.type \"BPE\", model.vocab and model.merges)");
        }
        var text = new StringBuilder("#version: 0.2\n");
        foreach (var merge in merges.EnumerateArray())
        {
            // Older files write a merge as "a b", newer ones as ["a", "b"].
            if (merge.ValueKind == JsonValueKind.String) text.Append(merge.GetString()).Append('\n');
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2) text.Append(merge[0].GetString()).Append(' ').Append(merge[1].GetString()).Append('\n');
            else throw new InvalidDataException($"{path}: a merge is neither \"a b\" nor [\"a\", \"b\"]: {merge.GetRawText()}");
        }
        return (Encoding.UTF8.GetBytes(vocab.GetRawText()), Encoding.UTF8.GetBytes(text.ToString()));
    }
}
