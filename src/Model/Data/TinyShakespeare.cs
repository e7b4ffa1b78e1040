using System.Text;

namespace FedLora.Model.Data;

/// <summary>
/// Tiny Shakespeare (data/tinyshakespeare/input.txt): plays as speeches, each a "NAME:" line and
/// the lines spoken, speeches separated by blank lines.
/// </summary>
public static class TinyShakespeare
{
    /// <summary>Reads the whole text.</summary>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="InvalidDataException">The file is empty.</exception>
    public static string LoadText(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Tiny Shakespeare file not found: {path}", path);
        var text = File.ReadAllText(path, Encoding.UTF8);
        return text.Length > 0 ? text : throw new InvalidDataException($"{path}: the file is empty");
    }

    /// <summary>
    /// The speeches of <paramref name="text"/>, in order. A speech is a paragraph (lines up to a
    /// blank line) whose first line ends with ':' (the speaker, without the colon); its text is the
    /// paragraph with a final newline. A paragraph that does not start with a speaker line
    /// continues the previous speaker.
    /// </summary>
    /// <exception cref="InvalidDataException">The text does not start with a speaker line.</exception>
    public static IReadOnlyList<Speech> Speeches(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var speeches = new List<Speech>();
        var lines = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        var paragraph = new StringBuilder();
        string? speaker = null;
        var firstLine = true;
        foreach (var line in lines.Append(""))
        {
            if (line.Trim().Length == 0)
            {
                if (paragraph.Length > 0) speeches.Add(new Speech(speaker!, paragraph.ToString()));
                paragraph.Clear();
                firstLine = true;
                continue;
            }
            if (firstLine)
            {
                var trimmed = line.TrimEnd();
                if (trimmed.EndsWith(':'))
                {
                    speaker = trimmed[..^1].Trim();
                }
                else if (speaker is null)
                {
                    throw new InvalidDataException($"the text must start with a speaker line \"NAME:\", but starts with \"{line}\"");
                }
                firstLine = false;
            }
            paragraph.Append(line).Append('\n');
        }
        return speeches;
    }

    /// <summary>
    /// Splits the speeches over <paramref name="clients"/> clients by speaker, so each speaker's
    /// lines belong to one client: natural non-IID clients, each with its own voices. Speakers are
    /// dealt largest first (by characters, ties by name) to the client with the fewest characters
    /// so far (ties to the lowest index), which balances client sizes deterministically. A
    /// client's text is its speeches in their original order, separated by blank lines.
    /// </summary>
    /// <exception cref="ArgumentException">There are fewer speakers than clients.</exception>
    public static IReadOnlyList<ShakespeareClient> SplitBySpeaker(string text, int clients)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(clients, 1);
        var speeches = Speeches(text);
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var speech in speeches) sizes[speech.Speaker] = sizes.GetValueOrDefault(speech.Speaker) + speech.Text.Length;
        if (sizes.Count < clients)
        {
            throw new ArgumentException($"the text has {sizes.Count} speakers, fewer than {clients} clients", nameof(clients));
        }

        var owner = new Dictionary<string, int>(StringComparer.Ordinal);
        var load = new long[clients];
        var speakers = new List<string>[clients];
        for (var k = 0; k < clients; k++) speakers[k] = [];
        foreach (var (speaker, size) in sizes.OrderByDescending(p => p.Value).ThenBy(p => p.Key, StringComparer.Ordinal))
        {
            var lightest = 0;
            for (var k = 1; k < clients; k++)
            {
                if (load[k] < load[lightest]) lightest = k;
            }
            owner[speaker] = lightest;
            load[lightest] += size;
            speakers[lightest].Add(speaker);
        }

        var texts = new StringBuilder[clients];
        for (var k = 0; k < clients; k++) texts[k] = new StringBuilder();
        foreach (var speech in speeches)
        {
            var builder = texts[owner[speech.Speaker]];
            if (builder.Length > 0) builder.Append('\n');
            builder.Append(speech.Text);
        }
        return [.. Enumerable.Range(0, clients).Select(k => new ShakespeareClient(speakers[k], texts[k].ToString()))];
    }
}

/// <summary>One speech: the speaker's name and the paragraph, "NAME:" line included.</summary>
/// <param name="Speaker">The name on the speaker line, without the colon.</param>
/// <param name="Text">The speech's lines, each ending with a newline.</param>
public sealed record Speech(string Speaker, string Text);

/// <summary>A client's share of Tiny Shakespeare.</summary>
/// <param name="Speakers">The speakers whose speeches this client holds.</param>
/// <param name="Text">Those speeches in their original order, separated by blank lines.</param>
public sealed record ShakespeareClient(IReadOnlyList<string> Speakers, string Text);
