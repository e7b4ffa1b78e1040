using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using FedLora.Model.Data;
using FedLora.Model.Training;
using FedLora.Runtime;

namespace FedLora.Server.Tests;

/// <summary>The server evaluates the global model after each round on the test set it holds, keeps the history with the round state and serves it.</summary>
public sealed class MetricsTests : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("fedlora-metrics-");

    public void Dispose() => _folder.Delete(recursive: true);

    private static IReadOnlyList<EvaluationSet> TestSet() =>
        [new EvaluationSet("all", InstructionBatcher.InOrder(NetworkHarness.Examples(9, 4), NetworkHarness.Batch, NetworkHarness.Time).ToList())];

    [Theory]
    [InlineData("fslora")]
    [InlineData("flora")]
    public async Task Metrics_AreTheSimulationsHeldOutLosses_ServedAndKeptAcrossARestart(string method)
    {
        using var harness = new NetworkHarness(method, [4, 2, 2, 1], clientsPerRound: 3, rounds: 2) { Evaluation = TestSet() };
        harness.Simulate();
        var options = harness.Options with { StateDirectory = _folder.FullName };
        await using (var server = await harness.StartServerAsync(options))
        {
            await harness.RunClientsAsync(server.Address!);
            await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

            using var http = harness.Http(server.Address!);
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", harness.Tokens[0]);
            var served = await http.GetFromJsonAsync<RoundMetrics[]>("v1/metrics");
            Assert.NotNull(served);
            Assert.Equal([0, 1], served.Select(m => m.Round));
            // The same runtime evaluates the same global model: the server's losses are the simulation's, bit for bit.
            Assert.Equal(harness.SimulatedRounds.Select(r => r.Evaluation["all"]), served.Select(m => m.Loss["all"]));
            Assert.Equal(harness.SimulatedRounds.Select(r => r.UploadBytes), served.Select(m => m.UploadBytes));

            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "not-a-token");
            Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("v1/metrics")).StatusCode);
        }
        // A restarted server reads the history back from its state folder.
        await using var resumed = await harness.StartServerAsync(options);
        Assert.Equal(harness.SimulatedRounds.Select(r => r.Evaluation["all"]), resumed.Coordinator.MetricsHistory.Select(m => m.Loss["all"]));
    }

    [Fact]
    public async Task TaskMetrics_MeasureTheGlobalModelWithItsAdapters_OnTheRoundsTheyAreDue()
    {
        var testSet = TestSet();
        using var harness = new NetworkHarness("fedit", [1, 1, 1], clientsPerRound: 3, rounds: 3) { Evaluation = testSet };
        // A task metric that is the test set's loss: equal to the held-out loss only if the global adapters are attached.
        var evaluation = new ServerEvaluation(testSet)
        {
            TaskMetrics = (model, round) => round == 1 ? null : new Dictionary<string, double> { ["loss"] = LocalTrainer.Evaluate(model, testSet[0].Batches).Loss },
        };
        var model = harness.NewModel();
        var (strategy, budgets) = harness.Strategy(model);
        await using var server = new FederatedServer(strategy, model, budgets, new ClientTokens(harness.Tokens), harness.Options, evaluation);
        await server.StartAsync(IPAddress.Loopback, 0);
        await harness.RunClientsAsync(server.Address!);
        await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        var history = server.Coordinator.MetricsHistory;
        Assert.Equal([true, false, true], history.Select(m => m.Task is not null));
        Assert.All(history.Where(m => m.Task is not null), m => Assert.Equal(m.Loss["all"], m.Task!["loss"]));
        Assert.NotEqual(history[0].Loss["all"], history[2].Loss["all"]);
    }
}
