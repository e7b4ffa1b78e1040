using FedLora.Kernels.Cpu;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;
using FedLora.Runtime;

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

    /// <summary>The size of a safetensors payload of F32 tensors (name, shape), written independently of the wire code.</summary>
    private static long PayloadSize(IEnumerable<(string Name, int[] Shape)> floats, IEnumerable<(string Name, int Length)> ints)
    {
        var writer = new SafetensorsWriter();
        foreach (var (name, shape) in floats) writer.AddFloats(name, new float[shape.Aggregate(1, (a, b) => a * b)], shape);
        foreach (var (name, length) in ints) writer.AddInt32s(name, new int[length], length);
        return writer.ToArray().LongLength;
    }

    /// <summary>The adapter a client of rank r receives or sends: A (r,C) unless only B travels, B (O,r), and FSLoRA's indices.</summary>
    private static long AdapterPayloadSize(IReadOnlyList<LoraModuleSpec> modules, int r, bool withA, bool withIndices)
    {
        var floats = new List<(string, int[])>();
        var ints = new List<(string, int)>();
        foreach (var module in modules)
        {
            if (withA) floats.Add(($"{module.Name}.lora_A.weight", [r, module.InFeatures]));
            floats.Add(($"{module.Name}.lora_B.weight", [module.OutFeatures, r]));
            if (withIndices) ints.Add(($"{module.Name}.lora_rank_indices", r));
        }
        return PayloadSize(floats, ints);
    }

    [Theory, MemberData(nameof(Methods))]
    public void Run_EveryMethod_LedgersTheTensorsItsMethodSends(string method)
    {
        var (model, simulation) = Build(method, seed: 1);
        using (model)
        {
            var modules = model.Layout.LoraModules(LoraTargets.AttentionQkv | LoraTargets.MlpDown);
            var results = simulation.Run();
            Assert.Equal(2, results.Count);
            foreach (var result in results)
            {
                Assert.Equal(3, result.Clients.Count);
                Assert.True(double.IsFinite(result.Evaluation["all"]), $"{method}: held-out loss {result.Evaluation["all"]}");
                long uploads = 0, downloads = 0;
                foreach (var client in result.Clients)
                {
                    Assert.True(float.IsFinite(client.MeanLoss), $"{method}: client {client.ClientId} loss {client.MeanLoss}");
                    var rank = method is "fedit" or "ffa-lora" ? 1 : Ranks[client.ClientId];
                    Assert.Equal(rank, client.Rank);
                    // Up: A and B at the client's rank (B alone for FFA-LoRA, with the indices for FSLoRA); HetLoRA may prune to a lower rank.
                    var uploadRank = method == "hetlora"
                        ? Enumerable.Range(1, rank).Single(r => AdapterPayloadSize(modules, r, withA: true, withIndices: false) == client.UploadBytes)
                        : rank;
                    Assert.Equal(AdapterPayloadSize(modules, uploadRank, withA: method != "ffa-lora", withIndices: method == "fslora"), client.UploadBytes);
                    uploads += client.UploadBytes;
                    // Down: the start adapter, or only the seed of a fresh one (FLoRA always, FlexLoRA before any aggregate exists), plus the
                    // assignment's scalars in the header (under 1 KiB); a FLoRA client sampled after a merge it missed also gets the base updates.
                    var tensors = method == "flora" || (method == "flexlora" && result.Round == 0)
                        ? PayloadSize([], [("fresh_seed", 1)])
                        : AdapterPayloadSize(modules, rank, withA: true, withIndices: method == "fslora");
                    if (method != "flora" || result.Round == 0) Assert.InRange(client.DownloadBytes - tensors, 1, 1023);
                    else Assert.True(client.DownloadBytes > tensors, $"client {client.ClientId} downloaded {client.DownloadBytes} bytes");
                    downloads += client.DownloadBytes;
                }
                // Only the sampled clients exchange anything: the round's totals are theirs.
                Assert.Equal(uploads, result.UploadBytes);
                Assert.Equal(downloads, result.DownloadBytes);
                Assert.Equal(result.Clients.Select(c => c.ClientId).Order(), simulation.Ledger.Entries.Where(e => e.Round == result.Round).Select(e => e.ClientId).Order());
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
    public void Ledger_FLora_AClientSampledAfterAMerge_DownloadsTheUpdatesItMissed()
    {
        var (model, simulation) = Build("flora", seed: 4, rounds: 3);
        using (model)
        {
            var results = simulation.Run();
            var lastSeen = new Dictionary<int, int>();
            foreach (var result in results)
            {
                foreach (var client in result.Clients)
                {
                    // Its assignment is a fresh seed and the header's scalars (under 1 KiB); on top come the updates merged since it last
                    // trained (every round merges one), each of 3 clients' stacked factors: rank >= 3 on (48x16) and (16x64), over 1,700 bytes.
                    var missed = result.Round - lastSeen.GetValueOrDefault(client.ClientId, 0);
                    var assignment = PayloadSize([], [("fresh_seed", 1)]);
                    if (missed == 0) Assert.InRange(client.DownloadBytes - assignment, 1, 1023);
                    else Assert.True(client.DownloadBytes > assignment + missed * 1_700, $"round {result.Round}: client {client.ClientId} missed {missed} updates, downloaded {client.DownloadBytes}");
                    lastSeen[client.ClientId] = result.Round;
                }
            }
        }
    }
}
