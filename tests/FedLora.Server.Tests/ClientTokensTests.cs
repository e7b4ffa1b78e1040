namespace FedLora.Server.Tests;

/// <summary>Client tokens: issued at random, written for the operator alone, matched by hash.</summary>
public sealed class ClientTokensTests : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("fedlora-tokens-");

    public void Dispose() => _folder.Delete(recursive: true);

    [Fact]
    public void WriteFile_ThenReadFile_SameTokensOwnerOnlyAndEachMatchesItsClient()
    {
        var issued = ClientTokens.Issue(3);
        Assert.Equal(3, issued.Distinct().Count());
        var path = Path.Combine(_folder.FullName, "tokens.txt");
        ClientTokens.WriteFile(path, issued);
        if (!OperatingSystem.IsWindows()) Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        var read = ClientTokens.ReadFile(path);
        Assert.Equal(issued, read);
        var tokens = new ClientTokens(read);
        for (var id = 0; id < 3; id++) Assert.Equal(id, tokens.ClientOf(issued[id]));
        Assert.Null(tokens.ClientOf(issued[0] + "x"));
    }

    [Theory]
    [InlineData("0 aaaaaaaaaaaaaaaaaaaa\n2 bbbbbbbbbbbbbbbbbbbb\n", "client ids must be 0..n-1")]
    [InlineData("0 aaaaaaaaaaaaaaaaaaaa\n0 bbbbbbbbbbbbbbbbbbbb\n", "client 0 has a second token")]
    [InlineData("zero aaaaaaaaaaaaaaaaaaaa\n", "expected 'CLIENT_ID TOKEN'")]
    public void ReadFile_BadLines_SayWhatIsWrong(string text, string message)
    {
        var path = Path.Combine(_folder.FullName, "bad.txt");
        File.WriteAllText(path, text);
        Assert.Contains(message, Assert.Throws<FormatException>(() => ClientTokens.ReadFile(path)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Constructor_ShortOrRepeatedTokens_Throws()
    {
        Assert.Throws<ArgumentException>(() => new ClientTokens(["short"]));
        Assert.Throws<ArgumentException>(() => new ClientTokens(["same-token-1234567", "same-token-1234567"]));
    }

    [Fact]
    public void WriteFile_HasNoByteOrderMark()
    {
        var path = Path.Combine(_folder.FullName, "tokens.txt");
        ClientTokens.WriteFile(path, ClientTokens.Issue(2));
        Assert.Equal((byte)'#', File.ReadAllBytes(path)[0]);
    }

    [Fact]
    public void ReadEntries_ThirdColumn_IsTheDeclaredExampleCount()
    {
        var path = Path.Combine(_folder.FullName, "declared.txt");
        File.WriteAllText(path, "\uFEFF0 aaaaaaaaaaaaaaaaaaaa 120\n1 bbbbbbbbbbbbbbbbbbbb\n");
        var (tokens, counts) = ClientTokens.ReadEntries(path);
        Assert.Equal(["aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"], tokens);
        Assert.Equal([120, null], counts);
    }

    [Fact]
    public void IsWeak_ShortOrRepetitiveTokens_AreWeakAndIssuedOnesAreNot()
    {
        Assert.True(ClientTokens.IsWeak("aaaaaaaaaaaaaaaaaaaa"));
        Assert.True(ClientTokens.IsWeak("abababababababababababababababababababab"));
        Assert.All(ClientTokens.Issue(20), token => Assert.False(ClientTokens.IsWeak(token)));
    }
}
