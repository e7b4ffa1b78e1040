namespace FedLora.Server.Tests;

/// <summary>A round closes transactionally; accepted updates survive a crash or a stop; the state folder cleans up after a crash.</summary>
public sealed class TransactionalCloseTests : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("fedlora-tx-");

    public void Dispose() => _folder.Delete(recursive: true);

    /// <summary>Makes the save of the round that ends with state round <paramref name="round"/> fail, as an unwritable folder does (root ignores chmod): a folder where its file must go.</summary>
    private string BlockSave(int round) => Directory.CreateDirectory(Path.Combine(_folder.FullName, $"state-{round:D6}.safetensors")).FullName;

    [Fact]
    public void FailedSave_Answers503AndChangesNothing_ThenTheRetryEqualsTheUninterruptedRun()
    {
        using var harness = new NetworkHarness("flora", [4, 2, 1], clientsPerRound: 3, rounds: 2);
        harness.Options = harness.Options with { StateDirectory = _folder.FullName };
        var (expectedState, expectedBase, _) = harness.Simulate();
        var options = harness.Options;
        var coordinator = harness.Coordinator(options, new TestClock());
        ChaosKit.EnrollAll(coordinator, [0, 1, 2]);
        var payloads = Enumerable.Range(0, 3).Select(id => ChaosKit.Train(coordinator, id, options)).ToArray();
        var baseBefore = coordinator.WithModel((model, _) => model.Backend.ToArray(model.Parameters));
        var stateBefore = coordinator.State;
        coordinator.Submit(0, 0, payloads[0]);
        coordinator.Submit(1, 0, payloads[1]);
        var blocked = BlockSave(1);

        var refused = Assert.Throws<UploadRejectedException>(() => coordinator.Submit(2, 0, payloads[2]));
        Assert.Equal(503, refused.StatusCode);
        Assert.Contains("could not save round 0", refused.Message, StringComparison.Ordinal);
        Assert.Same(stateBefore, coordinator.State);
        Assert.Equal(baseBefore, coordinator.WithModel((model, _) => model.Backend.ToArray(model.Parameters)));
        Assert.Equal(RoundPhase.Collecting, coordinator.Status().Phase);
        Assert.Equal([0, 1], coordinator.Status().Received);
        Assert.Empty(coordinator.Ledger.Entries);

        Directory.Delete(blocked);
        coordinator.Submit(2, 0, payloads[2]);
        Assert.Equal(1, coordinator.State.Round);
        for (var id = 0; id < 3; id++) coordinator.Submit(id, 1, ChaosKit.Train(coordinator, id, options));
        Assert.Equal(RoundPhase.Finished, coordinator.Status().Phase);
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(coordinator.State));
        Assert.Equal(expectedBase, coordinator.WithModel((model, _) => model.Backend.ToArray(model.Parameters)));
    }

    [Fact]
    public void FailedSaveAtDeadline_TickSurvivesAndRetriesAfterBackoff()
    {
        using var harness = new NetworkHarness("fedit", [1, 1, 1], clientsPerRound: 3, rounds: 1);
        var options = harness.Options with { StateDirectory = _folder.FullName, Quorum = 2, RoundDeadline = TimeSpan.FromMinutes(1) };
        var clock = new TestClock();
        var coordinator = harness.Coordinator(options, clock);
        ChaosKit.EnrollAll(coordinator, [0, 1, 2]);
        coordinator.Submit(0, 0, ChaosKit.Train(coordinator, 0, options));
        coordinator.Submit(1, 0, ChaosKit.Train(coordinator, 1, options));
        var blocked = BlockSave(1);
        clock.Now += TimeSpan.FromMinutes(2);
        coordinator.Tick();
        Assert.Equal(RoundPhase.Collecting, coordinator.Status().Phase);

        Directory.Delete(blocked);
        coordinator.Tick();
        Assert.Equal(RoundPhase.Collecting, coordinator.Status().Phase); // backoff: 1 s after the first failure
        clock.Now += TimeSpan.FromSeconds(1.5);
        coordinator.Tick();
        Assert.Equal(RoundPhase.Finished, coordinator.Status().Phase);
    }

    [Fact]
    public void Crash_AfterUpdatesWereAccepted_RestartResumesThemAndEqualsTheUninterruptedRun()
    {
        using var harness = new NetworkHarness("fslora", [4, 2, 1], clientsPerRound: 3, rounds: 2);
        harness.Options = harness.Options with { StateDirectory = _folder.FullName };
        var (expectedState, _, _) = harness.Simulate();
        var options = harness.Options;
        var first = harness.Coordinator(options, new TestClock());
        ChaosKit.EnrollAll(first, [0, 1, 2]);
        first.Submit(0, 0, ChaosKit.Train(first, 0, options));
        first.Submit(2, 0, ChaosKit.Train(first, 2, options));
        // A crash during a later write leaves a temporary file behind.
        File.WriteAllBytes(Path.Combine(_folder.FullName, StateStore.PendingFolder, ".round-000000-client-000001.safetensors.tmp"), [1, 2, 3]);

        // kill -9 here: the first coordinator is simply abandoned.
        var second = harness.Coordinator(options, new TestClock());
        Assert.False(File.Exists(Path.Combine(_folder.FullName, StateStore.PendingFolder, ".round-000000-client-000001.safetensors.tmp")));
        ChaosKit.EnrollAll(second, [0, 1, 2]);
        Assert.Equal([0, 2], second.Status().Received);
        Assert.Null(second.AssignmentFor(0).Payload);
        second.Submit(1, 0, ChaosKit.Train(second, 1, options));
        for (var id = 0; id < 3; id++) second.Submit(id, 1, ChaosKit.Train(second, id, options));
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(second.State));
        Assert.Empty(Directory.GetFiles(Path.Combine(_folder.FullName, StateStore.PendingFolder)));
    }

    [Fact]
    public async Task Stop_MidRound_ReturnsWithinTheBoundAndARestartKeepsTheAcceptedUpdate()
    {
        using var harness = new NetworkHarness("fedit", [1, 1, 1], clientsPerRound: 3, rounds: 1);
        harness.Options = harness.Options with { StateDirectory = _folder.FullName };
        var (expectedState, _, _) = harness.Simulate();
        var server = await harness.StartServerAsync();
        var coordinator = server.Coordinator;
        ChaosKit.EnrollAll(coordinator, [0, 1, 2]);
        coordinator.Submit(1, 0, ChaosKit.Train(coordinator, 1, harness.Options));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        await server.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(15), $"stopped in {watch.Elapsed}");

        await using var restarted = await harness.StartServerAsync();
        var results = await harness.RunClientsAsync(restarted.Address!);
        await restarted.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, results.Sum(r => r.RoundsTrained));
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(restarted.Coordinator.State));
    }

    [Fact]
    public void StateFolder_NotWritable_FailsAtStartWithAMessageNotAStackTrace()
    {
        var notAFolder = Path.Combine(_folder.FullName, "file");
        File.WriteAllText(notAFolder, "x");
        using var harness = new NetworkHarness("fedit", [1, 1], clientsPerRound: 2, rounds: 1);
        var error = Assert.Throws<StateFolderException>(() => harness.Coordinator(harness.Options with { StateDirectory = notAFolder }, new TestClock()));
        Assert.Contains($"cannot open the state folder {notAFolder}", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void StateFolder_IsOwnerOnly()
    {
        if (OperatingSystem.IsWindows()) return;
        using var harness = new NetworkHarness("fedit", [1, 1], clientsPerRound: 2, rounds: 1);
        var options = harness.Options with { StateDirectory = Path.Combine(_folder.FullName, "state") };
        var coordinator = harness.Coordinator(options, new TestClock());
        ChaosKit.EnrollAll(coordinator, [0, 1]);
        for (var id = 0; id < 2; id++) coordinator.Submit(id, 0, ChaosKit.Train(coordinator, id, options));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(options.StateDirectory));
        foreach (var file in Directory.GetFiles(options.StateDirectory).Where(f => f.EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".db", StringComparison.Ordinal)))
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        }
    }
}
