using FedLora.Model.Tokenization;

namespace FedLora.Model.Tests.Tokenization;

public class ByteTokenizerTests
{
    [Fact]
    public void Vocabulary_Is256BytesPlusEndOfText()
    {
        Assert.Equal(257, ByteTokenizer.VocabSize);
        Assert.Equal(256, ByteTokenizer.EndOfText);
    }

    [Fact]
    public void Encode_Ascii_GivesByteValues()
    {
        Assert.Equal([72, 105, 33, 10], ByteTokenizer.Instance.Encode("Hi!\n"));
        Assert.Empty(ByteTokenizer.Instance.Encode(""));
    }

    [Fact]
    public void Encode_NonAscii_GivesUtf8Bytes()
    {
        Assert.Equal([0xC3, 0xA9], ByteTokenizer.Instance.Encode("é"));
        Assert.Equal([0xE2, 0x9C, 0x93], ByteTokenizer.Instance.Encode("✓"));
        Assert.Equal([0xF0, 0x9F, 0x98, 0x80], ByteTokenizer.Instance.Encode("😀"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("First Citizen:\nBefore we proceed any further, hear me speak.\n")]
    [InlineData("naïve café ✓ 😀 日本語\t\r\n\0")]
    public void EncodeThenDecode_ValidText_RoundTrips(string text)
    {
        Assert.Equal(text, ByteTokenizer.Instance.Decode(ByteTokenizer.Instance.Encode(text)));
    }

    [Fact]
    public void Decode_EndOfText_RendersMarker()
    {
        Assert.Equal("a<|endoftext|>b<|endoftext|>", ByteTokenizer.Instance.Decode([97, 256, 98, 256]));
    }

    [Fact]
    public void Decode_InvalidUtf8_ReplacesEachBadSequence()
    {
        Assert.Equal("\uFFFD", ByteTokenizer.Instance.Decode([0xFF]));
        Assert.Equal("a\uFFFDb", ByteTokenizer.Instance.Decode([97, 0xE2, 0x9C, 98]));
        Assert.Equal("\uFFFD", ByteTokenizer.Instance.Decode([0xF0, 0x9F, 0x98]));
        // A character split by end-of-text does not fuse across it.
        Assert.Equal("\uFFFD<|endoftext|>\uFFFD", ByteTokenizer.Instance.Decode([0xC3, 256, 0xA9]));
    }

    [Theory]
    [InlineData(257)]
    [InlineData(-1)]
    public void Decode_TokenOutsideVocabulary_Throws(int token)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ByteTokenizer.Instance.Decode([65, token]));
        Assert.Contains("token 1", e.Message, StringComparison.Ordinal);
    }
}
