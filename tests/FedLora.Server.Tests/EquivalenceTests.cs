using FedLora.Federation;
namespace FedLora.Server.Tests;

/// <summary>A networked run over loopback HTTP against the in-process simulation of the same job.</summary>
public sealed class EquivalenceTests
{
    public static TheoryData<string> Methods() => [.. StrategyCatalog.Names];

    [Theory, MemberData(nameof(Methods))]
    public async Task NetworkedRun_SameSeedsFullParticipation_EqualsSimulationBitForBit(string method)
    {
        using var harness = new NetworkHarness(method, [4, 2, 2, 1], clientsPerRound: 4, rounds: 2);
        var (expectedState, expectedBase, _) = harness.Simulate();
        await using var server = await harness.StartServerAsync();
        var results = await harness.RunClientsAsync(server.Address!);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.All(results, r => Assert.Equal(2, r.RoundsTrained));
        var state = server.Coordinator.State;
        Assert.Equal(2, state.Round);
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(state));
        Assert.Equal(expectedState.ClientRanks, state.ClientRanks);
        Assert.Equal(expectedBase, NetworkHarness.BaseOf(server));
    }

    [Fact]
    public async Task NetworkedRun_PartialSampling_EqualsSimulationAndLedger()
    {
        using var harness = new NetworkHarness("fslora", [4, 2, 2, 1, 3], clientsPerRound: 3, rounds: 3);
        var (expectedState, _, _) = harness.Simulate();
        await using var server = await harness.StartServerAsync();
        var results = await harness.RunClientsAsync(server.Address!);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(9, results.Sum(r => r.RoundsTrained));
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(server.Coordinator.State));
        Assert.Equal(9, server.Coordinator.Ledger.Entries.Count(e => e.UploadBytes > 0));
    }
}
