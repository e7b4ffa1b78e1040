using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace FedLora.Model.Tokenization;

/// <summary>
/// GPT-2's byte-level BPE, from a Hugging Face folder's <c>vocab.json</c> + <c>merges.txt</c> or its
/// <c>tokenizer.json</c>, run by Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> at the byte
/// level with GPT-2's pre-tokenization pattern and <c>&lt;|endoftext|&gt;</c> as a special token. No
/// prefix space, no begin- or end-of-sequence token is added: the callers add end-of-text where an
/// example ends.
/// </summary>
public sealed partial class Gpt2Tokenizer : ITokenizer
{
    private const string EndOfTextText = "<|endoftext|>";

    private readonly BpeTokenizer _bpe;

    private Gpt2Tokenizer(BpeTokenizer bpe, int vocabSize, int endOfText)
    {
        _bpe = bpe;
        VocabSize = vocabSize;
        EndOfText = endOfText;
    }

    /// <summary>The model's vocabulary size V (at least the tokenizer's; models may pad it).</summary>
    public int VocabSize { get; }

    /// <summary>The end-of-text token (GPT-2's <c>&lt;|endoftext|&gt;</c>, 50256 in gpt2), from the model's config.</summary>
    public int EndOfText { get; }

    /// <summary>GPT-2's pre-tokenization (its encoder.py): contractions, letter runs, digit runs, other symbols, whitespace.</summary>
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2Pattern();

    /// <summary>
    /// The tokenizer files of the Hugging Face folder <paramref name="directory"/>: vocab.json and
    /// merges.txt, or else tokenizer.json. <paramref name="vocabSize"/> and <paramref name="endOfText"/>
    /// come from the model's config; every id of the vocabulary must lie below <paramref name="vocabSize"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The files are missing, malformed or do not fit the model.</exception>
    public static Gpt2Tokenizer FromFolder(string directory, int vocabSize, int endOfText)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var vocabPath = Path.Combine(directory, "vocab.json");
        var mergesPath = Path.Combine(directory, "merges.txt");
        var combined = Path.Combine(directory, "tokenizer.json");
        Dictionary<string, int> vocab;
        List<string> merges;
        string source;
        try
        {
            if (File.Exists(vocabPath) && File.Exists(mergesPath))
            {
                source = $"{vocabPath} and {mergesPath}";
                vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllBytes(vocabPath))
                    ?? throw new InvalidDataException($"{vocabPath}: null instead of a token -> id object");
                merges = [.. File.ReadLines(mergesPath).Where(line => line.Length > 0 && !line.StartsWith("#version", StringComparison.Ordinal))];
            }
            else if (File.Exists(combined))
            {
                source = combined;
                (vocab, merges) = ReadTokenizerJson(combined);
            }
            else
            {
                throw new InvalidDataException($"{directory}: no tokenizer: the folder needs vocab.json and merges.txt, or tokenizer.json (GPT-2's byte-level BPE)");
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{directory}: the tokenizer files are not valid JSON: {e.Message}", e);
        }
        foreach (var merge in merges)
        {
            if (merge.Split(' ').Length != 2) throw new InvalidDataException($"{source}: merge '{merge}' is not two symbols separated by one space");
        }
        var (largest, largestToken) = vocab.Count == 0 ? (-1, "") : vocab.Select(pair => (pair.Value, pair.Key)).Max();
        if (largest >= vocabSize || vocab.Values.Any(id => id < 0))
        {
            throw new InvalidDataException($"{source}: the tokenizer has id {largest} ('{largestToken}'), outside the model's vocabulary of {vocabSize} (config.json vocab_size)");
        }
        if ((uint)endOfText >= (uint)vocabSize)
        {
            throw new InvalidDataException($"{directory}: the end-of-text id {endOfText} (config.json eos_token_id) is outside the vocabulary of {vocabSize}");
        }
        var special = new Dictionary<string, int>(StringComparer.Ordinal) { [EndOfTextText] = endOfText };
        try
        {
            var bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(Gpt2Pattern(), special),
                SpecialTokens = special,
            });
            return new Gpt2Tokenizer(bpe, vocabSize, endOfText);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: not a GPT-2 byte-level BPE: {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return [.. _bpe.EncodeToIds(text)];
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
        return _bpe.Decode(tokens.ToArray(), considerSpecialTokens: true) ?? "";
    }

    /// <summary>tokenizer.json's model.vocab and model.merges.</summary>
    private static (Dictionary<string, int> Vocab, List<string> Merges) ReadTokenizerJson(string path)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(path));
        if (!document.RootElement.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object
            || !model.TryGetProperty("type", out var type) || type.GetString() != "BPE"
            || !model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object
            || !model.TryGetProperty("merges", out var merges) || merges.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException($"{path}: not a BPE tokenizer.json (it needs model.type \"BPE\", model.vocab and model.merges)");
        }
        var list = new List<string>();
        foreach (var merge in merges.EnumerateArray())
        {
            // Older files write a merge as "a b", newer ones as ["a", "b"].
            if (merge.ValueKind == JsonValueKind.String) list.Add(merge.GetString()!);
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2) list.Add($"{merge[0].GetString()} {merge[1].GetString()}");
            else throw new InvalidDataException($"{path}: a merge is neither \"a b\" nor [\"a\", \"b\"]: {merge.GetRawText()}");
        }
        return (vocab.Deserialize<Dictionary<string, int>>()!, list);
    }
}
