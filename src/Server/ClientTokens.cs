using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace FedLora.Server;

/// <summary>
/// The per-client bearer tokens, as the server keeps them: only their SHA-256 hashes. The operator
/// issues one random token per client (<see cref="Issue"/>) and hands it over out of band; the token
/// file holds "id token" lines.
/// </summary>
public sealed class ClientTokens
{
    private readonly byte[][] _hashes;

    /// <summary>Keeps the hashes of <paramref name="tokens"/>, token i belonging to client i.</summary>
    public ClientTokens(IReadOnlyList<string> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Count == 0) throw new ArgumentException("a job needs at least one client token", nameof(tokens));
        if (tokens.Any(t => string.IsNullOrWhiteSpace(t) || t.Length < 16)) throw new ArgumentException("every client token must be at least 16 characters", nameof(tokens));
        if (tokens.Distinct(StringComparer.Ordinal).Count() != tokens.Count) throw new ArgumentException("client tokens must be distinct", nameof(tokens));
        _hashes = tokens.Select(Hash).ToArray();
    }

    /// <summary>Number of clients.</summary>
    public int Count => _hashes.Length;

    /// <summary><paramref name="count"/> fresh random tokens (32 bytes each, URL-safe base64).</summary>
    public static string[] Issue(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        return Enumerable.Range(0, count)
            .Select(_ => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_'))
            .ToArray();
    }

    /// <summary>Reads "id token" lines (ids 0..n-1, each once; '#' starts a comment).</summary>
    public static string[] ReadFile(string path) => ReadEntries(path).Tokens;

    /// <summary>
    /// Reads "id token [examples]" lines (ids 0..n-1, each once; '#' starts a comment): the tokens, and per client
    /// the example count the operator declares (null when the line has none: the client's report is used, capped).
    /// </summary>
    public static (string[] Tokens, int?[] ExampleCounts) ReadEntries(string path)
    {
        var entries = new SortedDictionary<int, (string Token, int? Examples)>();
        foreach (var (line, number) in File.ReadAllLines(path).Select((l, i) => (l.Trim().TrimStart('\uFEFF'), i + 1)))
        {
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length is not (2 or 3) || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            {
                throw new FormatException($"{path}:{number}: expected 'CLIENT_ID TOKEN' or 'CLIENT_ID TOKEN EXAMPLES'");
            }
            int? examples = null;
            if (parts.Length == 3)
            {
                if (!int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1)
                {
                    throw new FormatException($"{path}:{number}: the example count must be a whole number >= 1");
                }
                examples = n;
            }
            if (!entries.TryAdd(id, (parts[1], examples))) throw new FormatException($"{path}:{number}: client {id} has a second token");
        }
        if (entries.Count == 0 || entries.Keys.Last() != entries.Count - 1) throw new FormatException($"{path}: client ids must be 0..n-1, each once");
        return ([.. entries.Values.Select(e => e.Token)], [.. entries.Values.Select(e => e.Examples)]);
    }

    /// <summary>
    /// Whether <paramref name="token"/> is guessable: shorter than 32 characters or drawn from fewer than 12
    /// distinct characters (an issued token has 43 characters from 64).
    /// </summary>
    public static bool IsWeak(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return token.Length < 32 || token.Distinct().Count() < 12;
    }

    /// <summary>Writes "id token" lines to a new file <paramref name="path"/>, readable by its owner only (on Unix).</summary>
    public static void WriteFile(string path, IReadOnlyList<string> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var writer = new StreamWriter(path, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false), options);
        writer.WriteLine("# fedlora client tokens: give client i only its own line; an optional third column declares its example count");
        for (var i = 0; i < tokens.Count; i++) writer.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{i} {tokens[i]}"));
    }

    /// <summary>The client the token belongs to, or null.</summary>
    public int? ClientOf(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        var hash = Hash(token);
        for (var id = 0; id < _hashes.Length; id++)
        {
            if (CryptographicOperations.FixedTimeEquals(hash, _hashes[id])) return id;
        }
        return null;
    }

    private static byte[] Hash(string token) => SHA256.HashData(Encoding.UTF8.GetBytes(token));
}
