using FedLora.Federation;
using FedLora.Runtime;

namespace FedLora.Server.Tests;

/// <summary>
/// The ledger is the bytes on the wire: over the network it equals what the server sent to and took from each
/// client, as counted by the HTTP layer and by the clients themselves, and the simulation's ledger equals the
/// networked one entry for entry.
/// </summary>
public sealed class LedgerTests
{
    public static TheoryData<string> Methods() => [.. StrategyCatalog.Names];

    [Theory, MemberData(nameof(Methods))]
    public async Task Ledger_EqualsTheBytesSentAndReceived_InSimulationAndOverTheNetwork(string method)
    {
        // Partial participation, so that a FLoRA client sampled again has missed base updates to catch up on.
        using var harness = new NetworkHarness(method, [4, 2, 2, 1, 3], clientsPerRound: 2, rounds: 4);
        var (_, _, simulated) = harness.Simulate();
        await using var server = await harness.StartServerAsync();
        var results = await harness.RunClientsAsync(server.Address!);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        var ledger = server.Coordinator.Ledger;
        for (var id = 0; id < harness.ClientCount; id++)
        {
            var entries = ledger.Entries.Where(e => e.ClientId == id).ToList();
            Assert.Equal(server.BytesSentTo(id), entries.Sum(e => e.DownloadBytes));
            Assert.Equal(server.BytesReceivedFrom(id), entries.Sum(e => e.UploadBytes));
            Assert.Equal(results[id].BytesDownloaded, entries.Sum(e => e.DownloadBytes));
            Assert.Equal(results[id].BytesUploaded, entries.Sum(e => e.UploadBytes));
        }
        Assert.Equal(Sorted(simulated.Entries), Sorted(ledger.Entries));
        Assert.True(ledger.TotalUpload() > 0 && ledger.TotalDownload() > 0);
    }

    [Fact]
    public async Task FLora_ClientsCatchUpWithTheUpdatesTheyMissed_NotTheWholeBase()
    {
        using var harness = new NetworkHarness("flora", [4, 2, 2, 1, 3], clientsPerRound: 2, rounds: 4);
        var (_, expectedBase, _) = harness.Simulate();
        await using var server = await harness.StartServerAsync();
        var results = await harness.RunClientsAsync(server.Address!);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        var fullBase = BasePayload.FullLength(harness.NewModel(), 4);
        var assignments = server.Coordinator.Ledger.Entries.Count(e => e.UploadBytes > 0);
        Assert.Equal(8, assignments);
        // Someone caught up (sampled again after a merge), and no client ever downloaded the whole base.
        Assert.Contains(server.Coordinator.Ledger.Entries, e => e.Round > 0 && e.DownloadBytes > 0);
        Assert.All(results, r => Assert.True(r.BytesDownloaded < fullBase, $"a client downloaded {r.BytesDownloaded} bytes, the base is {fullBase}"));
        Assert.Equal(expectedBase, NetworkHarness.BaseOf(server));
    }

    [Fact]
    public async Task FLora_AClientWithoutTheBase_DownloadsItWhole_AndTheLedgerSaysSo()
    {
        using var harness = new NetworkHarness("flora", [4, 2, 2], clientsPerRound: 3, rounds: 2);
        await using var server = await harness.StartServerAsync();
        var results = await harness.RunClientsAsync(server.Address!, holdBase: false);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        var fullBase = BasePayload.FullLength(harness.NewModel(), 0);
        var round0 = server.Coordinator.Ledger.Entries.Where(e => e.Round == 0).ToList();
        Assert.Equal(3, round0.Count);
        Assert.All(round0, e => Assert.True(e.DownloadBytes > fullBase, $"round 0 download {e.DownloadBytes} should include the whole base ({fullBase})"));
        for (var id = 0; id < 3; id++) Assert.Equal(server.BytesSentTo(id), results[id].BytesDownloaded);
    }

    private static List<LedgerEntry> Sorted(IEnumerable<LedgerEntry> entries) => [.. entries.OrderBy(e => e.Round).ThenBy(e => e.ClientId)];
}
