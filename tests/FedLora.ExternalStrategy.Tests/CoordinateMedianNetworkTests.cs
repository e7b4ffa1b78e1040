using System.Collections.Concurrent;
using System.Net;
using FedLora.Federation;
using FedLora.Kernels.Cpu;
using FedLora.Lora.Safetensors;
using FedLora.Model.Data;
using FedLora.Runtime;
using FedLora.Server;

namespace FedLora.ExternalStrategy.Tests;

/// <summary>
/// The strategy written outside FedLora, run across machines: a <see cref="FederatedServer"/> on loopback
/// HTTP drives it with <see cref="JoinClient"/>s that each train on their own backend, through FedLora.Server's
/// public API only. The networked job must end where the in-process simulation of the same job ends, every
/// round's global adapter must be the coordinate-wise median of the updates the clients actually put on the
/// wire, and the ledgers must agree entry for entry.
/// </summary>
public sealed class CoordinateMedianNetworkTests : IDisposable
{
    private static readonly JoinOptions FastJoin = new()
    {
        PollInterval = TimeSpan.FromMilliseconds(20),
        MaxPolls = 5_000,
        MaxDuration = TimeSpan.FromSeconds(120),
        MaxRetries = 20,
        RetryDelay = TimeSpan.FromMilliseconds(50),
        MaxRetryDelay = TimeSpan.FromMilliseconds(500),
        AttemptTimeout = TimeSpan.FromSeconds(30),
    };

    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        for (var i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
    }

    private T Own<T>(T disposable) where T : IDisposable
    {
        _owned.Add(disposable);
        return disposable;
    }

    /// <summary>Passes requests through and keeps the body of every update upload the server took, by (round, client).</summary>
    private sealed class UploadTap(ConcurrentDictionary<(int Round, int Client), byte[]> taken) : DelegatingHandler(new SocketsHttpHandler())
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var body = request.Method == HttpMethod.Post && request.Content is { } content
                ? await content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false)
                : null;
            var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            // v1/clients/{id}/rounds/{round}/update
            var segments = request.RequestUri!.AbsolutePath.Trim('/').Split('/');
            if (body is not null && response.IsSuccessStatusCode && segments is [_, "clients", var client, "rounds", var round, "update"])
            {
                taken[(int.Parse(round, System.Globalization.CultureInfo.InvariantCulture), int.Parse(client, System.Globalization.CultureInfo.InvariantCulture))] = body;
            }
            return response;
        }
    }

    private (GlobalState State, CommunicationLedger Ledger) Simulate()
    {
        var model = Own(MedianJob.NewModel(Own(new CpuBackend())));
        var clients = Enumerable.Range(0, MedianJob.Clients).Select(id =>
        {
            var examples = MedianJob.ClientExamples(id);
            return new FederatedClient(id, examples.Count, ClientBudget.OfRank(MedianJob.Rank), seed => new InstructionBatcher(examples, MedianJob.Batch, MedianJob.Time, seed));
        }).ToList();
        var simulation = new FederatedSimulation(MedianJob.Strategy(model), model, clients, [],
            new SimulationOptions(MedianJob.Rounds, MedianJob.ClientsPerRound, MedianJob.Local, MedianJob.Seed));
        simulation.Run();
        return (simulation.State!, simulation.Ledger);
    }

    [Fact]
    public async Task Network_TwoRoundsOfTheMedian_EqualsTheSimulation_AndIsTheMedianOfTheUploads()
    {
        var (expectedState, expectedLedger) = Simulate();

        var serverModel = Own(MedianJob.NewModel(Own(new CpuBackend())));
        var strategy = MedianJob.Strategy(serverModel);
        var tokens = ClientTokens.Issue(MedianJob.Clients);
        var options = new ServerOptions(MedianJob.Rounds, MedianJob.ClientsPerRound, MedianJob.Seed, MedianJob.Batch, MedianJob.Time, MedianJob.Local)
        {
            RoundDeadline = TimeSpan.FromSeconds(60),
            // Every client shares 127.0.0.1 and polls every 20 ms.
            Limits = new ServerLimits { MaxConnectionsPerAddress = 4096, RequestsPerSecondPerAddress = 1_000_000, RequestsPerSecondPerClient = 100_000 },
        };
        var budgets = Enumerable.Repeat(ClientBudget.OfRank(MedianJob.Rank), MedianJob.Clients).ToArray();
        await using var server = new FederatedServer(strategy, serverModel, budgets, new ClientTokens(tokens), options);
        var states = new ConcurrentDictionary<int, GlobalState>();
        server.Coordinator.RoundCompleted += round => states[round] = server.Coordinator.State;
        var address = await server.StartAsync(IPAddress.Loopback, 0);

        var uploads = new ConcurrentDictionary<(int Round, int Client), byte[]>();
        var joins = Enumerable.Range(0, MedianJob.Clients).Select(id =>
        {
            var http = Own(new HttpClient(Own(new UploadTap(uploads))) { BaseAddress = address, Timeout = TimeSpan.FromSeconds(60) });
            // The client's own copy of the job's base model: it starts from it instead of downloading the base.
            using var own = MedianJob.NewModel(Own(new CpuBackend()));
            var baseWeights = own.Backend.ToArray(own.Parameters);
            var client = new JoinClient(http, id, tokens[id], Own(new CpuBackend()), MedianJob.ClientExamples(id), FastJoin, baseWeights);
            return Task.Run(() => client.RunAsync());
        }).ToArray();
        var results = await Task.WhenAll(joins).WaitAsync(TimeSpan.FromSeconds(180));
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        // (a) The networked job ends bit for bit where the simulation of the same job ends.
        var final = server.Coordinator.State;
        Assert.Equal(MedianJob.Rounds, final.Round);
        Assert.Equal(MedianJob.Rounds * MedianJob.ClientsPerRound, results.Sum(r => r.RoundsTrained));
        Assert.Equal(Flatten(expectedState), Flatten(final));

        // (b) Each round's global adapter is the coordinate-wise median of the three uploads the server took that round.
        Assert.Equal(MedianJob.Rounds * MedianJob.ClientsPerRound, uploads.Count);
        Assert.Same(final, states[MedianJob.Rounds - 1]);
        for (var round = 0; round < MedianJob.Rounds; round++)
        {
            var files = uploads.Where(u => u.Key.Round == round).Select(u => SafetensorsFile.Parse(u.Value)).ToList();
            Assert.Equal(MedianJob.ClientsPerRound, files.Count);
            for (var m = 0; m < strategy.Modules.Count; m++)
            {
                var name = strategy.Modules[m].Name;
                var a = files.Select(f => f.ReadFloats(WireTensor.LoraA(name))).ToList();
                var b = files.Select(f => f.ReadFloats(WireTensor.LoraB(name))).ToList();
                Assert.False(b[0].AsSpan().SequenceEqual(b[1]), $"round {round}: two clients uploaded the same B for {name}, so a median and a mean cannot be told apart");
                Assert.Equal(MedianJob.MiddleOfThree(a), states[round].Adapters[m].A);
                Assert.Equal(MedianJob.MiddleOfThree(b), states[round].Adapters[m].B);
            }
        }

        // (c) The server's ledger is the simulation's, entry for entry.
        Assert.Equal(Sorted(expectedLedger.Entries), Sorted(server.Coordinator.Ledger.Entries));
        Assert.Equal(MedianJob.Rounds * MedianJob.ClientsPerRound, server.Coordinator.Ledger.Entries.Count(e => e.UploadBytes > 0));
        for (var id = 0; id < MedianJob.Clients; id++)
        {
            Assert.Equal(results[id].BytesUploaded, server.Coordinator.Ledger.Entries.Where(e => e.ClientId == id).Sum(e => e.UploadBytes));
        }
    }

    private static float[][] Flatten(GlobalState state) => [.. state.Adapters.SelectMany(a => new[] { a.A, a.B })];

    private static List<LedgerEntry> Sorted(IEnumerable<LedgerEntry> entries) => [.. entries.OrderBy(e => e.Round).ThenBy(e => e.ClientId)];
}
