using FedLora.Federation;
using FedLora.Lora;
using FedLora.Runtime;

namespace FedLora.Server.Tests;

/// <summary>The state folder: what is committed comes back exactly; what is not committed does not count.</summary>
public sealed class StateStoreTests : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("fedlora-store-");

    public void Dispose() => _folder.Delete(recursive: true);

    private static GlobalState State(int round, float offset)
    {
        var modules = new[] { new LoraModuleSpec("h.0.qkv", 4, 6), new LoraModuleSpec("h.0.down", 8, 4) };
        HostAdapter Adapter(LoraModuleSpec m, float shift) => new(m, 2,
            Enumerable.Range(0, 2 * m.InFeatures).Select(i => i * 0.25f + offset + shift).ToArray(),
            Enumerable.Range(0, m.OutFeatures * 2).Select(i => -i * 0.5f + offset + shift).ToArray());
        var adam = new ServerAdamState(round, modules.Select(m => Adapter(m, 1)).ToArray(), modules.Select(m => Adapter(m, 2)).ToArray());
        return new GlobalState(round, modules.Select(m => Adapter(m, 0)).ToArray(), 3.5f, LoraScaling.RankStabilized, new Dictionary<int, int> { [1] = 1, [3] = 2 }, adam);
    }

    private static void AssertSame(GlobalState expected, GlobalState actual)
    {
        Assert.Equal(expected.Round, actual.Round);
        Assert.Equal(expected.Alpha, actual.Alpha);
        Assert.Equal(expected.Scaling, actual.Scaling);
        Assert.Equal(expected.Modules, actual.Modules);
        Assert.Equal(expected.ClientRanks, actual.ClientRanks);
        AssertSameAdapters(expected.Adapters, actual.Adapters, "adapters");
        Assert.NotNull(actual.ServerOptimizer);
        Assert.Equal(expected.ServerOptimizer!.Step, actual.ServerOptimizer.Step);
        AssertSameAdapters(expected.ServerOptimizer.FirstMoment, actual.ServerOptimizer.FirstMoment, "first moment");
        AssertSameAdapters(expected.ServerOptimizer.SecondMoment, actual.ServerOptimizer.SecondMoment, "second moment");
    }

    private static void AssertSameAdapters(IReadOnlyList<HostAdapter> expected, IReadOnlyList<HostAdapter> actual, string what)
    {
        Assert.True(expected.Count == actual.Count, $"{what}: {actual.Count} modules, expected {expected.Count}");
        for (var m = 0; m < expected.Count; m++)
        {
            Assert.Equal(expected[m].Module, actual[m].Module);
            Assert.Equal(expected[m].Rank, actual[m].Rank);
            Assert.True(expected[m].A.SequenceEqual(actual[m].A), $"{what}: A of {expected[m].Module.Name} differs");
            Assert.True(expected[m].B.SequenceEqual(actual[m].B), $"{what}: B of {expected[m].Module.Name} differs");
        }
    }

    [Fact]
    public void Save_ThenLoad_ReturnsTheStateAndLedgerExactly()
    {
        var store = new StateStore(_folder.FullName);
        Assert.Null(store.LoadProgress());
        LedgerEntry[] ledger = [new(0, 0, 100, 50), new(0, 2, 100, 60)];
        var first = store.Save(null, State(1, 0f), null, "fslora", 7, 0, "0123456789abcdef", [3, 4, 5], ledger);
        LedgerEntry[] more = [.. ledger, new(1, 1, 90, 40)];
        store.Save(first, State(2, 1f), null, "fslora", 7, 0, "0123456789abcdef", [3, 4, 5], more);

        var progress = new StateStore(_folder.FullName).LoadProgress()!;
        Assert.Equal(2, progress.Round);
        Assert.Equal(more, progress.Ledger);
        Assert.Equal([3, 4, 5], progress.ExampleCounts);
        AssertSame(State(2, 1f), store.LoadState(progress));
        Assert.False(File.Exists(Path.Combine(_folder.FullName, first.StateFile)), "the superseded round's file is deleted");
    }

    [Fact]
    public void Load_AfterACrashBeforeCommit_ReturnsTheLastCommittedRound()
    {
        var store = new StateStore(_folder.FullName);
        var first = store.Save(null, State(1, 0f), null, "fedit", 7, 0, "0123456789abcdef", [3], [new(0, 0, 10, 5)]);
        // A crash after the next round's tensors were written but before its transaction: a stray file, no commit.
        File.WriteAllBytes(Path.Combine(_folder.FullName, "state-000002.safetensors"), [1, 2, 3]);

        var progress = new StateStore(_folder.FullName).LoadProgress()!;
        Assert.Equal(1, progress.Round);
        Assert.Equal(first.StateFile, progress.StateFile);
        AssertSame(State(1, 0f), store.LoadState(progress));
    }

    [Fact]
    public async Task Resume_FolderOfAnotherJob_IsRefused()
    {
        using var harness = new NetworkHarness("fedit", [1, 1], clientsPerRound: 2, rounds: 1);
        new StateStore(_folder.FullName).Save(null, State(1, 0f), null, "fslora", 99, 0, "0123456789abcdef", [3, 4], []);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => harness.StartServerAsync(harness.Options with { StateDirectory = _folder.FullName }));
        Assert.Contains("holds a fslora job with seed 99", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RemoveOrphans_AfterACrashDuringWrites_DeletesTemporaryAndUnreferencedFilesOnly()
    {
        var store = new StateStore(_folder.FullName);
        var committed = store.Save(null, State(1, 0f), null, "fedit", 7, 0, "0123456789abcdef", [3], [new(0, 0, 10, 5)]);
        store.SavePending(1, 0, [1, 2, 3]);
        store.SavePending(0, 2, [4, 5]);
        string[] orphans = [".base-000002.safetensors.tmp", ".state-000002.safetensors.0123abcd.tmp"];
        File.WriteAllBytes(Path.Combine(_folder.FullName, "state-000002.safetensors"), [9]);
        foreach (var name in orphans) File.WriteAllBytes(Path.Combine(_folder.FullName, name), [9]);

        var removed = new StateStore(_folder.FullName).RemoveOrphans(store.LoadProgress());

        Assert.Equal([.. orphans, "pending/round-000000-client-000002.safetensors", "state-000002.safetensors"], removed.Order(StringComparer.Ordinal).ToArray());
        Assert.False(File.Exists(Path.Combine(_folder.FullName, "state-000002.safetensors")), "a round file no commit references is deleted");
        Assert.True(File.Exists(Path.Combine(_folder.FullName, committed.StateFile)));
        var kept = Assert.Single(store.LoadPending(1));
        Assert.Equal(0, kept.ClientId);
        Assert.Equal([1, 2, 3], kept.Payload);
    }
}
