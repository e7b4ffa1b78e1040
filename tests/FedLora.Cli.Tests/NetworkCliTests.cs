using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace FedLora.Cli.Tests;

/// <summary><c>fedlora serve</c> and <c>fedlora join</c> as a user runs them: bad input fails before work; a small real job runs over loopback.</summary>
public sealed class NetworkCliTests : IDisposable
{
    private readonly string _scratch = Directory.CreateTempSubdirectory("fedlora-net-cli-").FullName;

    public void Dispose() => Directory.Delete(_scratch, recursive: true);

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "FedLora.sln"))) return directory.FullName;
        }
        throw new DirectoryNotFoundException($"no FedLora.sln above {AppContext.BaseDirectory}");
    }

    private static Process Start(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = RepositoryRoot(), RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fedlora.dll"));
        foreach (var arg in args) start.ArgumentList.Add(arg);
        start.Environment["COLUMNS"] = "200";
        return Process.Start(start)!;
    }

    private static async Task<(int ExitCode, string Output)> Finish(Process process, string what)
    {
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"fedlora {what} did not finish in 5 minutes");
        }
        return (process.ExitCode, await output + await error);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    [Theory]
    [InlineData("serve --quorum 9", "--quorum 9 must be in [1, 5]")]
    [InlineData("serve --bind nowhere", "--bind 'nowhere' is not an IP address")]
    [InlineData("serve --certificate-password-file x", "--certificate-password-file needs --certificate")]
    [InlineData("serve --certificate-password x", "--certificate-password")]
    [InlineData("serve --method fedsgd", "'fedsgd' is unknown")]
    [InlineData("join --server ftp://host --client-id 0 --token abc", "must be an http:// or https:// URL")]
    [InlineData("join --server http://127.0.0.1:1 --client-id 0", "give exactly one of --token and --token-file")]
    [InlineData("join --server http://127.0.0.1:1 --client-id 12 --token abc", "--client-id 12 must be in [0, 9]")]
    public async Task BadOption_FailsBeforeWork_WithAMessageNamingIt(string command, string message)
    {
        var (exitCode, output) = await Finish(Start(command.Split(' ')), command);
        Assert.NotEqual(0, exitCode);
        Assert.Contains(message, output, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", output, StringComparison.Ordinal);
    }

    /// <summary>A self-signed certificate for 127.0.0.1 as the operator's .pfx (with key) and the clients' .crt (without).</summary>
    private (string Pfx, string Crt) Certificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        var (pfx, crt) = (Path.Combine(_scratch, "server.pfx"), Path.Combine(_scratch, "server.crt"));
        File.WriteAllBytes(pfx, certificate.Export(X509ContentType.Pfx, "secret"));
        File.WriteAllBytes(crt, certificate.Export(X509ContentType.Cert));
        return (pfx, crt);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ServeAndJoin_TwoClientsOnLoopback_FinishTheJobAndSaveTheGlobalAdapter(bool https)
    {
        var port = FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture);
        var output = Path.Combine(_scratch, "out");
        string[] serveTls = [], joinTls = [];
        if (https)
        {
            var (pfx, crt) = Certificate();
            var passwordFile = Path.Combine(_scratch, "pfx-password");
            File.WriteAllText(passwordFile, "secret\n");
            (serveTls, joinTls) = (["--certificate", pfx, "--certificate-password-file", passwordFile], ["--trust-certificate", crt]);
        }
        var scheme = https ? "https" : "http";
        using var server = Start(["serve", "--method", "hetlora", "--partition", "iid", "--clients", "2", "--ranks", "4,2", "--rounds", "2",
            "--clients-per-round", "2", "--local-steps", "1", "--batch", "2", "--context", "32", "--bind", "127.0.0.1", "--port", port, "--out", output, .. serveTls]);
        try
        {
            var tokens = Path.Combine(output, "tokens.txt");
            for (var wait = 0; wait < 600 && !File.Exists(tokens); wait++) await Task.Delay(100);
            Assert.True(File.Exists(tokens), "serve did not issue the token file within 60 s");
            await Task.Delay(500);
            var lines = File.ReadAllLines(tokens).Where(l => !l.StartsWith('#')).ToArray();
            var clients = Enumerable.Range(0, 2).Select(id =>
            {
                var tokenFile = Path.Combine(_scratch, $"token{id}");
                File.WriteAllText(tokenFile, lines[id]);
                return Finish(Start(["join", "--server", $"{scheme}://127.0.0.1:{port}", "--client-id", $"{id}", "--token-file", tokenFile,
                    "--partition", "iid", "--clients", "2", "--poll-seconds", "0.2", .. joinTls]), $"join {id}");
            }).ToArray();
            var joined = await Task.WhenAll(clients);
            var served = await Finish(server, "serve");
            Assert.True(served.ExitCode == 0, served.Output);
            Assert.All(joined, j => Assert.True(j.ExitCode == 0 && j.Output.Contains("job finished: trained 2 rounds", StringComparison.Ordinal), j.Output));
            Assert.True(File.Exists(Path.Combine(output, "adapter", "adapter_model.safetensors")));
            Assert.True(File.Exists(Path.Combine(output, "state", "job.db")));
        }
        finally
        {
            if (!server.HasExited) server.Kill(entireProcessTree: true);
        }
    }
}
