using FedLora.Kernels.Cpu;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Runtime;

namespace FedLora.Server.Tests;

/// <summary>The round state machine: quorum and deadline, stragglers, late updates, and resuming from the state folder.</summary>
public sealed class RoundLifecycleTests
{
    private sealed class ManualClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => Now;
    }

    /// <summary>Client <paramref name="id"/>'s real local training on its assignment, as a payload.</summary>
    private static byte[] Train(RoundCoordinator coordinator, int id, JobSeeds seeds)
    {
        var reply = coordinator.AssignmentFor(id);
        var assignment = AssignmentCodec.Decode(reply.Payload!);
        using var backend = new CpuBackend();
        using var model = new Gpt(backend, NetworkHarness.Config, NetworkHarness.Batch, NetworkHarness.Time);
        coordinator.WithModel((server, _) => { backend.Upload(server.Backend.ToArray(server.Parameters), model.Parameters); return 0; });
        var batches = new InstructionBatcher(NetworkHarness.ClientExamples(id), NetworkHarness.Batch, NetworkHarness.Time, RoundSchedule.BatchSeed(seeds.Seed, assignment.Round, id));
        var (update, _) = ClientTraining.Train(model, assignment, batches, seeds.Options.Local);
        return WirePayload.Serialize(update.Upload);
    }

    /// <summary>Makes the server unreachable for the clients while <see cref="Down"/> is set, as a crashed server is.</summary>
    private sealed class OutageHandler : DelegatingHandler
    {
        public OutageHandler() : base(new SocketsHttpHandler()) { }

        public volatile bool Down;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Down ? throw new HttpRequestException("connection refused (server down)") : base.SendAsync(request, cancellationToken);
    }

    private sealed record JobSeeds(int Seed, ServerOptions Options);

    [Fact]
    public void Round_QuorumBeforeDeadline_StaysOpenThenClosesAtDeadlineAndRefusesTheStraggler()
    {
        using var harness = new NetworkHarness("hetlora", [4, 2, 1], clientsPerRound: 3, rounds: 2);
        var options = harness.Options with { Quorum = 2, RoundDeadline = TimeSpan.FromMinutes(5) };
        var clock = new ManualClock();
        var coordinator = harness.Coordinator(options, clock);
        for (var id = 0; id < 3; id++) coordinator.Enroll(id, NetworkHarness.ClientExamples(id).Count);
        var seeds = new JobSeeds(options.Seed, options);
        var straggler = Train(coordinator, 2, seeds);
        coordinator.Submit(0, 0, Train(coordinator, 0, seeds));
        coordinator.Submit(1, 0, Train(coordinator, 1, seeds));

        clock.Now += TimeSpan.FromMinutes(4);
        coordinator.Tick();
        Assert.Equal(RoundPhase.Collecting, coordinator.Status().Phase);
        Assert.Equal(0, coordinator.State.Round);

        clock.Now += TimeSpan.FromMinutes(2);
        coordinator.Tick();
        Assert.Equal(1, coordinator.State.Round);
        Assert.Equal([0, 1], coordinator.Ledger.Entries.Where(e => e.Round == 0 && e.UploadBytes > 0).Select(e => e.ClientId));
        var late = Assert.Throws<UploadRejectedException>(() => coordinator.Submit(2, 0, straggler));
        Assert.Equal(409, late.StatusCode);
        Assert.Contains("round 0 is closed (late update refused)", late.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Round_DeadlineWithoutQuorum_WaitsForTheQuorum()
    {
        using var harness = new NetworkHarness("fedit", [1, 1, 1], clientsPerRound: 3, rounds: 1);
        var options = harness.Options with { Quorum = 2, RoundDeadline = TimeSpan.FromSeconds(30) };
        var clock = new ManualClock();
        var coordinator = harness.Coordinator(options, clock);
        for (var id = 0; id < 3; id++) coordinator.Enroll(id, NetworkHarness.ClientExamples(id).Count);
        var seeds = new JobSeeds(options.Seed, options);
        coordinator.Submit(1, 0, Train(coordinator, 1, seeds));
        clock.Now += TimeSpan.FromMinutes(1);
        coordinator.Tick();
        Assert.Equal(RoundPhase.Collecting, coordinator.Status().Phase);

        coordinator.Submit(2, 0, Train(coordinator, 2, seeds));
        coordinator.Tick();
        Assert.Equal(RoundPhase.Finished, coordinator.Status().Phase);
        Assert.True(coordinator.Finished.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Network_ClientThatNeverReports_RoundCompletesAtDeadlineWithQuorum()
    {
        using var harness = new NetworkHarness("flexlora", [4, 2, 1], clientsPerRound: 3, rounds: 2);
        var options = harness.Options with { Quorum = 2, RoundDeadline = TimeSpan.FromMilliseconds(500) };
        await using var server = await harness.StartServerAsync(options);
        using (var silent = harness.Http(server.Address!))
        {
            // Client 2 enrolls (so the job can start) and then never reports.
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/clients/2/enroll") { Content = System.Net.Http.Json.JsonContent.Create(new EnrollRequest(5)) };
            request.Headers.Authorization = new("Bearer", harness.Tokens[2]);
            using var enrolled = await silent.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(enrolled.IsSuccessStatusCode);
        }
        var results = await harness.RunClientsAsync(server.Address!, [0, 1]);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.All(results, r => Assert.Equal(2, r.RoundsTrained));
        Assert.Equal(2, server.Coordinator.State.Round);
        Assert.DoesNotContain(server.Coordinator.Ledger.Entries, e => e.ClientId == 2 && e.UploadBytes > 0);
    }

    [Fact]
    public async Task Network_ClientKilledAndRestarted_JobEndsEqualToSimulation()
    {
        using var harness = new NetworkHarness("ffa-lora", [1, 1, 1], clientsPerRound: 3, rounds: 3);
        var (expectedState, _, _) = harness.Simulate();
        await using var server = await harness.StartServerAsync();
        using var kill = new CancellationTokenSource();
        server.Coordinator.RoundCompleted += round => { if (round == 0) kill.Cancel(); };
        var victim = harness.Client(server.Address!, 0).RunAsync(kill.Token);
        var others = harness.RunClientsAsync(server.Address!, [1, 2]);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => victim.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal(RoundPhase.Collecting, server.Coordinator.Status().Phase);

        var restarted = await harness.Client(server.Address!, 0).RunAsync().WaitAsync(TimeSpan.FromSeconds(120));
        await others;
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.InRange(restarted.RoundsTrained, 2, 3);
        Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(server.Coordinator.State));
    }

    [Fact]
    public async Task Status_DuringEnrollment_ReportsPhaseAndNeedsAToken()
    {
        using var harness = new NetworkHarness("fedit", [1, 1], clientsPerRound: 2, rounds: 1);
        await using var server = await harness.StartServerAsync();
        var http = harness.Http(server.Address!);
        using (var anonymous = await http.GetAsync(new Uri("v1/status", UriKind.Relative)).WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.Equal(System.Net.HttpStatusCode.Unauthorized, anonymous.StatusCode);
        }
        http.DefaultRequestHeaders.Authorization = new("Bearer", harness.Tokens[1]);
        var status = await System.Net.Http.Json.HttpClientJsonExtensions.GetFromJsonAsync<RoundStatus>(http, new Uri("v1/status", UriKind.Relative)).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(RoundPhase.Enrolling, status!.Phase);
        Assert.Equal(0, status.Enrolled);
        Assert.Equal(1, status.Rounds);
    }

    [Fact]
    public async Task Network_ServerRestartedFromStateDir_ResumesAndEqualsUninterruptedRun()
    {
        var stateDir = Directory.CreateTempSubdirectory("fedlora-state-");
        try
        {
            using var harness = new NetworkHarness("flora", [4, 2, 2, 1], clientsPerRound: 3, rounds: 4);
            harness.Options = harness.Options with { StateDirectory = stateDir.FullName };
            var (expectedState, expectedBase, _) = harness.Simulate();

            var first = await harness.StartServerAsync();
            var port = first.Address!.Port;
            var firstRoundDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var network = new OutageHandler();
            first.Coordinator.RoundCompleted += round =>
            {
                if (round != 1) return;
                network.Down = true; // the server "crashes" right after committing round 1
                firstRoundDone.TrySetResult();
            };
            var clients = harness.RunClientsAsync(first.Address!, handler: network);
            await firstRoundDone.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await first.DisposeAsync();
            Assert.True(File.Exists(Path.Combine(stateDir.FullName, StateStore.DatabaseFile)));

            await using var second = await harness.StartServerAsync(port: port);
            Assert.Equal(2, second.Coordinator.State.Round);
            network.Down = false;
            var results = await clients;
            await second.Finished.WaitAsync(TimeSpan.FromSeconds(30));

            Assert.Equal(4, second.Coordinator.State.Round);
            Assert.Equal(expectedBase, NetworkHarness.BaseOf(second));
            Assert.Equal(NetworkHarness.Flatten(expectedState), NetworkHarness.Flatten(second.Coordinator.State));
            var uploads = second.Coordinator.Ledger.Entries.Where(e => e.UploadBytes > 0).Select(e => (e.Round, e.ClientId)).ToList();
            Assert.Equal(12, uploads.Count);
            Assert.Equal(uploads.Distinct().Count(), uploads.Count);
        }
        finally
        {
            stateDir.Delete(recursive: true);
        }
    }
}
