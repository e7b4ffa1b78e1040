using FedLora.Kernels.Cpu;
using FedLora.Lora.Safetensors;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;

namespace FedLora.Federation.Tests;

/// <summary>The in-process round loop on a tiny GPT: every method runs, runs reproducibly, and its ledger counts what travels.</summary>
public sealed class SimulationTests : IDisposable
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 1, Channels: 16, Heads: 2);
    private const int Batch = 2, Time = 16, GlobalRank = 4;
    private static readonly int[] Ranks = [4, 2, 2, 1];
    private readonly CpuBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    private static List<InstructionExample> Examples(int client, int count) =>
        Enumerable.Range(0, count)
            .Select(i => InstructionTemplate.Tokenize(new InstructionRecord($"Name client {client}'s item {i}.", "", $"item {i * (client + 1)}", "open_qa")))
            .ToList();

    private (Gpt Model, FederatedSimulation Simulation) Build(string method, int seed, int rounds = 2)
    {
        var model = new Gpt(_backend, Config, Batch, Time);
        model.InitializeParameters(new Random(42));
        var modules = model.Layout.LoraModules(LoraTargets.AttentionQkv | LoraTargets.MlpDown);
        var budgets = method == "fslora"
            ? ClientBudget.FromRatios(Ranks.Select(r => (double)r / GlobalRank).ToArray(), Ranks.Length)
            : ClientBudget.FromRanks(method is "fedit" or "ffa-lora" ? [1, 1, 1, 1] : Ranks, Ranks.Length);
        var settings = new LoraSettings(method is "fedit" or "ffa-lora" ? 1 : GlobalRank, Alpha: 2f * GlobalRank);
        var strategy = StrategyCatalog.Create(method, modules, settings);
        var clients = Enumerable.Range(0, Ranks.Length)
            .Select(id =>
            {
                var examples = Examples(id, 3 + id);
                return new FederatedClient(id, examples.Count, budgets[id], batchSeed => new InstructionBatcher(examples, Batch, Time, batchSeed));
            })
            .ToList();
        var evaluation = new[] { new EvaluationSet("all", InstructionBatcher.InOrder(Examples(9, 4), Batch, Time).ToList()) };
        var options = new SimulationOptions(rounds, ClientsPerRound: 3, new TrainingOptions(Steps: 2, LearningRate: 1e-2f), seed);
        return (model, new FederatedSimulation(strategy, model, clients, evaluation, options));
    }

    public static TheoryData<string> Methods() => [.. StrategyCatalog.Names];

    [Theory, MemberData(nameof(Methods))]
    public void Run_EveryMethod_CompletesRoundsWithFiniteLossesAndLedger(string method)
    {
        var (model, simulation) = Build(method, seed: 1);
        using (model)
        {
            var results = simulation.Run();
            Assert.Equal(2, results.Count);
            foreach (var result in results)
            {
                Assert.Equal(3, result.Clients.Count);
                Assert.True(double.IsFinite(result.Evaluation["all"]), $"{method}: held-out loss {result.Evaluation["all"]}");
                Assert.All(result.Clients, c => Assert.True(float.IsFinite(c.MeanLoss) && c.UploadBytes > 0 && c.DownloadBytes > 0));
                Assert.Equal(result.UploadBytes, result.Clients.Sum(c => c.UploadBytes));
            }
        }
    }

    [Fact]
    public void Run_SameSeed_IsBitForBitReproducible()
    {
        float[][] FinalAdapters(int seed, out IReadOnlyList<RoundResult> results)
        {
            var (model, simulation) = Build("fslora", seed);
            using (model)
            {
                results = simulation.Run();
                return simulation.State!.Adapters.SelectMany(a => new[] { a.A, a.B }).ToArray();
            }
        }
        var first = FinalAdapters(7, out var firstResults);
        var second = FinalAdapters(7, out var secondResults);
        Assert.Equal(first, second);
        Assert.Equal(firstResults.Select(r => r.Evaluation["all"]), secondResults.Select(r => r.Evaluation["all"]));
        Assert.Equal(firstResults.SelectMany(r => r.Clients.Select(c => c.MeanLoss)), secondResults.SelectMany(r => r.Clients.Select(c => c.MeanLoss)));
        var other = FinalAdapters(8, out _);
        Assert.NotEqual(first, other);
    }

    [Fact]
    public void Ledger_FsLoraUpload_IsTheSketchedSubAdapterAndItsIndices()
    {
        var (model, simulation) = Build("fslora", seed: 3, rounds: 1);
        using (model)
        {
            var result = simulation.Run().Single();
            var modules = model.Layout.LoraModules(LoraTargets.AttentionQkv | LoraTargets.MlpDown);
            foreach (var client in result.Clients)
            {
                // m_k (O + C) floats per module, plus the m_k indices of its sketch: nothing else travels up.
                var m = Ranks[client.ClientId];
                Assert.Equal(m, client.Rank);
                var expected = new SafetensorsWriter();
                foreach (var module in modules)
                {
                    expected.AddFloats($"{module.Name}.lora_A.weight", new float[m * module.InFeatures], m, module.InFeatures);
                    expected.AddFloats($"{module.Name}.lora_B.weight", new float[module.OutFeatures * m], module.OutFeatures, m);
                    expected.AddInt32s($"{module.Name}.lora_rank_indices", new int[m], m);
                }
                Assert.Equal(expected.ToArray().LongLength, client.UploadBytes);
            }
            Assert.Equal(result.UploadBytes, simulation.Ledger.TotalUpload(0));
        }
    }

    [Fact]
    public void Ledger_FLora_EveryClientDownloadsTheMergedUpdate()
    {
        var (model, simulation) = Build("flora", seed: 4, rounds: 1);
        using (model)
        {
            var result = simulation.Run().Single();
            var perClient = simulation.Ledger.Entries.ToDictionary(e => e.ClientId);
            // The unsampled client still downloads the broadcast merged update.
            Assert.Equal(Ranks.Length, perClient.Count);
            var unsampled = Enumerable.Range(0, Ranks.Length).Except(result.Clients.Select(c => c.ClientId)).Single();
            Assert.True(perClient[unsampled].DownloadBytes > 0);
            Assert.Equal(0, perClient[unsampled].UploadBytes);
        }
    }
}
