using FedLora.Model.Data;

namespace FedLora.Model.Tests.Data;

public class TinyShakespeareTests
{
    private static readonly Lazy<string> Text = new(() => TinyShakespeare.LoadText(RepoPaths.Data("tinyshakespeare", "input.txt")));

    private const string Play = "ALPHA:\nOne.\nTwo.\n\nBETA:\nThree.\n\nALPHA:\nFour.\n\nA line without a speaker.\n\n\nGAMMA:\nFive.\n";

    [Fact]
    public void LoadText_ShippedFile_IsWholeText()
    {
        Assert.Equal(1_115_394, Text.Value.Length);
        Assert.StartsWith("First Citizen:\nBefore we proceed any further, hear me speak.\n", Text.Value, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadText_MissingFile_NamesPath()
    {
        var e = Assert.Throws<FileNotFoundException>(() => TinyShakespeare.LoadText("/no/such/input.txt"));
        Assert.Contains("/no/such/input.txt", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Speeches_SmallPlay_SplitsAtBlankLinesAndContinuesSpeaker()
    {
        var speeches = TinyShakespeare.Speeches(Play);
        Assert.Equal(
            [
                new Speech("ALPHA", "ALPHA:\nOne.\nTwo.\n"),
                new Speech("BETA", "BETA:\nThree.\n"),
                new Speech("ALPHA", "ALPHA:\nFour.\n"),
                new Speech("ALPHA", "A line without a speaker.\n"),
                new Speech("GAMMA", "GAMMA:\nFive.\n"),
            ],
            speeches);
    }

    [Fact]
    public void Speeches_TextWithoutSpeaker_Throws()
    {
        Assert.Throws<InvalidDataException>(() => TinyShakespeare.Speeches("no speaker here\n"));
    }

    [Fact]
    public void Speeches_ShippedFile_Has7222SpeechesBy309Speakers()
    {
        var speeches = TinyShakespeare.Speeches(Text.Value);
        Assert.Equal(7222, speeches.Count);
        Assert.Equal(309, speeches.Select(s => s.Speaker).Distinct().Count());
        Assert.All(speeches, s => Assert.StartsWith(s.Speaker + ":\n", s.Text, StringComparison.Ordinal));
    }

    [Fact]
    public void SplitBySpeaker_SmallPlay_DealsLargestSpeakerFirst()
    {
        var clients = TinyShakespeare.SplitBySpeaker(Play, 2);
        Assert.Equal(["ALPHA"], clients[0].Speakers);
        Assert.Equal("ALPHA:\nOne.\nTwo.\n\nALPHA:\nFour.\n\nA line without a speaker.\n", clients[0].Text);
        Assert.Equal(["BETA", "GAMMA"], clients[1].Speakers);
        Assert.Equal("BETA:\nThree.\n\nGAMMA:\nFive.\n", clients[1].Text);
    }

    [Fact]
    public void SplitBySpeaker_ShippedFile_EachSpeakerInOneBalancedClient()
    {
        var clients = TinyShakespeare.SplitBySpeaker(Text.Value, 10);
        Assert.Equal(10, clients.Count);
        var speakers = clients.SelectMany(c => c.Speakers).ToList();
        Assert.Equal(309, speakers.Count);
        Assert.Equal(309, speakers.Distinct().Count());
        var speechChars = TinyShakespeare.Speeches(Text.Value).Sum(s => (long)s.Text.Length);
        var sizes = clients.Select(c => c.Text.Length).ToList();
        // Client texts are the speeches plus one blank line between consecutive speeches.
        Assert.Equal(speechChars, sizes.Sum(s => (long)s) - TinyShakespeare.Speeches(Text.Value).Count + clients.Count);
        Assert.True(sizes.Max() < 1.2 * sizes.Min(), $"client sizes {string.Join(", ", sizes)} are unbalanced");
        Assert.Equal(clients.Select(c => c.Text), TinyShakespeare.SplitBySpeaker(Text.Value, 10).Select(c => c.Text));
    }

    [Fact]
    public void SplitBySpeaker_MoreClientsThanSpeakers_Throws()
    {
        var e = Assert.Throws<ArgumentException>(() => TinyShakespeare.SplitBySpeaker(Play, 4));
        Assert.Contains("3 speakers, fewer than 4 clients", e.Message, StringComparison.Ordinal);
    }
}
