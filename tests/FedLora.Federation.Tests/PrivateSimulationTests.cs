using FedLora.Federation.Privacy;
using FedLora.Kernels.Cpu;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;
using FedLora.Runtime;

namespace FedLora.Federation.Tests;

/// <summary>Differential privacy in the round loop: each round aggregates privately, reports epsilon so far, steps the adaptive clip.</summary>
public sealed class PrivateSimulationTests : IDisposable
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 1, Channels: 16, Heads: 2);
    private const int Batch = 2, Time = 16, Clients = 4, PerRound = 3;
    private readonly CpuBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    public static TheoryData<string> SumMethods => ["fslora", "fedit", "zero-padding", "hetlora", "flexlora", "ffa-lora"];

    private static List<InstructionExample> Examples(int client, int count) =>
        [.. Enumerable.Range(0, count).Select(i => InstructionTemplate.Tokenize(new InstructionRecord($"Name client {client}'s item {i}.", "", $"item {i * (client + 1)}", "open_qa")))];

    private (Gpt Model, FederatedSimulation Simulation) Build(string method, DpMechanism? privacy, int rounds = 3)
    {
        var model = new Gpt(_backend, Config, Batch, Time);
        model.InitializeParameters(new Random(42));
        var modules = model.Layout.LoraModules(LoraTargets.AttentionQkv | LoraTargets.MlpDown);
        var (settings, budgets) = StrategyCatalog.Budgets(method, [4, 2, 2, 1], 4, null, null);
        var strategy = StrategyCatalog.Create(method, modules, settings);
        var clients = Enumerable.Range(0, Clients).Select(id =>
        {
            var examples = Examples(id, 3 + id);
            return new FederatedClient(id, examples.Count, budgets[id], seed => new InstructionBatcher(examples, Batch, Time, seed));
        }).ToList();
        var evaluation = new[] { new EvaluationSet("all", InstructionBatcher.InOrder(Examples(9, 4), Batch, Time).ToList()) };
        var options = new SimulationOptions(rounds, PerRound, new TrainingOptions(Steps: 2, LearningRate: 1e-2f), Seed: 5) { Privacy = privacy };
        return (model, new FederatedSimulation(strategy, model, clients, evaluation, options));
    }

    private static DpMechanism Mechanism(double z, AdaptiveClipping? adaptive = null) =>
        new DpSettings { Clip = 0.05, NoiseMultiplier = z, Delta = 1e-3, Adaptive = adaptive }.Resolve(Clients, PerRound, 3);

    private static float[] Flatten(GlobalState state) => [.. state.Adapters.SelectMany(adapter => adapter.A.Concat(adapter.B))];

    [Theory]
    [MemberData(nameof(SumMethods))]
    public void Run_Dp_EveryRoundReportsTheEpsilonSpentSoFar(string method)
    {
        var mechanism = Mechanism(z: 1.5);
        var (model, simulation) = Build(method, mechanism);
        using (model)
        {
            var results = simulation.Run();

            for (var round = 0; round < results.Count; round++)
            {
                var privacy = results[round].Privacy!;
                Assert.Equal(mechanism.EpsilonAfter(round + 1), privacy.Epsilon);
                Assert.Equal(PerRound, privacy.Reported);
                Assert.Equal(0.05, privacy.Clip);
                Assert.True(double.IsFinite(results[round].Evaluation["all"]));
            }
            Assert.True(results[2].Privacy!.Epsilon > results[0].Privacy!.Epsilon);
            Assert.All(Flatten(simulation.State!), value => Assert.True(float.IsFinite(value)));
        }
    }

    [Fact]
    public void Run_Dp_IsReproducibleAndTheNoiseReachesTheState()
    {
        float[] Final(DpMechanism? privacy)
        {
            var (model, simulation) = Build("fedit", privacy, rounds: 2);
            using (model)
            {
                simulation.Run();
                return Flatten(simulation.State!);
            }
        }

        var noised = Final(Mechanism(z: 2));
        Assert.Equal(noised, Final(Mechanism(z: 2)));
        Assert.NotEqual(noised, Final(Mechanism(z: 0)));
        Assert.NotEqual(Final(Mechanism(z: 0)), Final(null));
    }

    [Fact]
    public void Run_DpAdaptive_EachRoundUsesTheClipThePreviousLeft()
    {
        var (model, simulation) = Build("zero-padding", Mechanism(z: 1, new AdaptiveClipping(TargetQuantile: 0.5, LearningRate: 0.5, CountNoise: 1)));
        using (model)
        {
            var results = simulation.Run();

            Assert.NotEqual(results[0].Privacy!.Clip, results[0].Privacy!.NextClip);
            for (var round = 1; round < results.Count; round++) Assert.Equal(results[round - 1].Privacy!.NextClip, results[round].Privacy!.Clip);
        }
    }

    [Fact]
    public void Create_DpAccountedForPoissonSampling_Refused()
    {
        // The round loop samples M of N without replacement, where neighbours replace one client (sensitivity 2S):
        // a mechanism accounted for Poisson sampling composes z where only z / 2 holds, and understates epsilon.
        var poisson = new DpSettings { Clip = 0.05, NoiseMultiplier = 1, Delta = 1e-3, Sampling = ClientSampling.Poisson }.Resolve(Clients, PerRound, 3);

        var error = Assert.Throws<ArgumentException>(() => Build("fedit", poisson));
        Assert.Contains("without replacement", error.Message);
    }

    [Fact]
    public void Create_DpFlora_RefusedBeforeAnyRound()
    {
        var error = Assert.Throws<NotSupportedException>(() => Build("flora", Mechanism(z: 1)));
        Assert.Contains("never forms a sum", error.Message);
    }
}
