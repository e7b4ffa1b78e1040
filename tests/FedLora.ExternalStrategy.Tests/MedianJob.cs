using FedLora.Federation;
using FedLora.Kernels;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;

namespace FedLora.ExternalStrategy.Tests;

/// <summary>
/// One tiny federated job for the median strategy, shared by the in-process run and the networked run so
/// both train the same model on the same data with the same seeds: four clients with 3..6 examples, three
/// sampled per round, two rounds of two local steps, rank 2 on the attention's qkv projection.
/// </summary>
internal static class MedianJob
{
    public static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 1, Channels: 16, Heads: 2);
    public const int Batch = 2, Time = 16, Clients = 4, ClientsPerRound = 3, Rounds = 2, Seed = 5, Rank = 2;
    public static readonly TrainingOptions Local = new(Steps: 2, LearningRate: 5e-2f);

    /// <summary>The job's base model, initialized from seed 42: every participant's copy is the same.</summary>
    public static Gpt NewModel(Backend backend)
    {
        var model = new Gpt(backend, Config, Batch, Time);
        model.InitializeParameters(new Random(42));
        return model;
    }

    public static CoordinateMedianStrategy Strategy(Gpt model) =>
        new(model.Layout.LoraModules(LoraTargets.AttentionQkv), new LoraSettings(Rank, Alpha: 2f * Rank));

    public static List<InstructionExample> ClientExamples(int client) => Examples(client, 3 + client);

    public static List<InstructionExample> Examples(int client, int count) =>
        [.. Enumerable.Range(0, count).Select(i => InstructionTemplate.Tokenize(new InstructionRecord($"Name client {client}'s item {i}.", "", $"item {i * (client + 1)}", "open_qa")))];

    /// <summary>For three arrays, per coordinate the value that is neither the smallest nor the largest.</summary>
    public static float[] MiddleOfThree(IReadOnlyList<float[]> v) =>
        [.. Enumerable.Range(0, v[0].Length).Select(i => Math.Max(Math.Min(v[0][i], v[1][i]), Math.Min(Math.Max(v[0][i], v[1][i]), v[2][i])))];
}
