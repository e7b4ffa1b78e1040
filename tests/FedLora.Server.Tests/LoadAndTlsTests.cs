using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Xunit.Abstractions;

namespace FedLora.Server.Tests;

/// <summary>Many concurrent clients on loopback, and the API over HTTPS.</summary>
public sealed class LoadAndTlsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Load_HundredConcurrentClients_RoundCompletesWithNoUpdateLost()
    {
        const int Clients = 100;
        using var harness = new NetworkHarness("fedit", Enumerable.Repeat(1, Clients).ToArray(), clientsPerRound: Clients, rounds: 1, localSteps: 1);
        var (expectedState, _, _) = harness.Simulate();
        await using var server = await harness.StartServerAsync();
        var watch = Stopwatch.StartNew();
        var results = await harness.RunClientsAsync(server.Address!);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(60));
        watch.Stop();

        Assert.All(results, r => Assert.Equal(1, r.RoundsTrained));
        Assert.Equal(Clients, server.Coordinator.Ledger.Entries.Count(e => e.Round == 0 && e.UploadBytes > 0));
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(server.Coordinator.State));
        output.WriteLine($"load: {Clients} clients, 1 round (enroll + base + assignment + 1 local step + upload each) in {watch.Elapsed.TotalSeconds:F2} s; " +
            $"server received {server.BytesReceived} bytes, sent {server.BytesSent} bytes; clients uploaded {results.Sum(r => r.BytesUploaded)} and downloaded {results.Sum(r => r.BytesDownloaded)} bytes");
    }

    /// <summary>A self-signed certificate for 127.0.0.1 / localhost, with its private key.</summary>
    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pfx, "test"), "test");
    }

    [Fact]
    public async Task Https_ConfiguredCertificate_RunEqualsSimulationAndPlainClientsAreRejected()
    {
        using var certificate = SelfSigned();
        using var harness = new NetworkHarness("zero-padding", [4, 2, 1], clientsPerRound: 3, rounds: 2);
        var (expectedState, _, _) = harness.Simulate();
        await using var server = await harness.StartServerAsync(certificate: certificate);
        var address = new UriBuilder(server.Address!) { Scheme = "https" }.Uri;
        Assert.Equal("https", server.Address!.Scheme);

        // Clients trust exactly this certificate (pinned by thumbprint), as an operator's clients would.
        using var pinned = new SocketsHttpHandler();
        pinned.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) =>
            presented is not null && presented.GetCertHashString() == certificate.GetCertHashString();
        using var untrusting = new SocketsHttpHandler();
        var refused = harness.Client(address, 0, untrusting, NetworkHarness.FastJoin with { MaxRetries = 0 });
        await Assert.ThrowsAsync<HttpRequestException>(() => refused.RunAsync().WaitAsync(TimeSpan.FromSeconds(30)));

        var results = await harness.RunClientsAsync(address, handler: pinned);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.All(results, r => Assert.Equal(2, r.RoundsTrained));
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(server.Coordinator.State));
    }
}
