using System.Security.Cryptography;
using System.Text.Json;
using FedLora.Kernels.Cpu;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;
using FedLora.Runtime;

namespace FedLora.Federation.Tests;

/// <summary>The library facade: a job from a checkpoint and a data folder, run with a callback, saved, and nothing of the caller's changed.</summary>
public sealed class FederatedJobTests : IDisposable
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 1, Channels: 16, Heads: 2);
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("fedlora-job-");
    private readonly string _checkpoint;
    private readonly string _data;

    public FederatedJobTests()
    {
        using (var backend = new CpuBackend())
        using (var model = new Gpt(backend, Config, 1, 16))
        {
            model.InitializeParameters(new Random(42));
            _checkpoint = Path.Combine(_folder.FullName, "base.safetensors");
            GptCheckpoint.Save(model, _checkpoint);
        }
        _data = Directory.CreateDirectory(Path.Combine(_folder.FullName, "data")).FullName;
        for (var k = 0; k < 3; k++) WriteRecords(Path.Combine(_data, $"local_training_{k}.json"), k, 3 + k);
        WriteRecords(Path.Combine(_data, "global_test.json"), 9, 4);
    }

    public void Dispose() => _folder.Delete(recursive: true);

    private static void WriteRecords(string path, int client, int count) =>
        File.WriteAllText(path, JsonSerializer.Serialize(Enumerable.Range(0, count).Select(i => new Dictionary<string, string>
        {
            ["instruction"] = $"Name client {client}'s item {i}.",
            ["context"] = "",
            ["response"] = $"item {i * (client + 1)}",
            ["category"] = "open_qa",
        })));

    private static FederatedJobSettings Tiny(string method) =>
        new() { Method = method, Rounds = 2, ClientsPerRound = 2, LocalSteps = 2, LearningRate = 5e-2f, Batch = 2, Context = 16, Seed = 3 };

    /// <summary>The held-out loss of a saved checkpoint, without any adapter.</summary>
    private double HeldOutLoss(string checkpoint)
    {
        using var backend = new CpuBackend();
        using var model = GptCheckpoint.Load(checkpoint, backend, 2, 16);
        var heldOut = Dolly.Load(Path.Combine(_data, "global_test.json")).Select(InstructionTemplate.Tokenize).ToArray();
        return LocalTrainer.Evaluate(model, InstructionBatcher.InOrder(heldOut, 2, 16)).Loss;
    }

    [Theory]
    [InlineData("flora")]
    [InlineData("fslora")]
    public void Run_ThenSaveModel_TheSavedModelIsTheJobsGlobalModel_AndTheBaseIsUntouched(string method)
    {
        var before = SHA256.HashData(File.ReadAllBytes(_checkpoint));
        var baseModel = BaseModel.Load(_checkpoint);
        var rounds = new List<int>();
        using (var job = FederatedJob.Create(baseModel, ClientDataset.FromFolder(_data, [4, 2, 1]), Tiny(method)))
        {
            var results = job.Run(round => rounds.Add(round.Round));
            var saved = Path.Combine(_folder.FullName, "tuned.safetensors");
            job.SaveModel(saved);

            Assert.Equal([0, 1], rounds);
            Assert.Equal(results[^1].Evaluation["all"], HeldOutLoss(saved), 1e-4);
            Assert.True(Math.Abs(HeldOutLoss(_checkpoint) - HeldOutLoss(saved)) > 1e-4, "the saved model is the base model: the job's training is not in it");
        }
        // The job trained a copy: the checkpoint file and a second job from the same BaseModel start where the first did.
        Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(_checkpoint)));
        using var again = FederatedJob.Create(baseModel, ClientDataset.FromFolder(_data, [4, 2, 1]), Tiny(method) with { Rounds = 1 });
        var first = again.Run()[0];
        using var fresh = FederatedJob.Create(BaseModel.Load(_checkpoint), ClientDataset.FromFolder(_data, [4, 2, 1]), Tiny(method) with { Rounds = 1 });
        Assert.Equal(first.Evaluation["all"], fresh.Run()[0].Evaluation["all"]);
    }

    [Fact]
    public void SaveAdapter_WritesTheGlobalAdapter_AndFLoraSaysToSaveTheModel()
    {
        using var job = FederatedJob.Create(BaseModel.Load(_checkpoint), ClientDataset.FromFolder(_data, [4, 2, 1]), Tiny("zero-padding"));
        Assert.Throws<InvalidOperationException>(() => job.SaveAdapter(Path.Combine(_folder.FullName, "early.safetensors")));
        job.Run();
        var path = Path.Combine(_folder.FullName, "adapter.safetensors");
        job.SaveAdapter(path);

        using var backend = new CpuBackend();
        using var loaded = AdapterFile.Open(SafetensorsFile.Load(path), backend);
        var state = job.State!;
        Assert.Equal(state.Modules, loaded.Modules);
        for (var m = 0; m < state.Adapters.Count; m++)
        {
            Assert.Equal(state.Adapters[m].A, backend.ToArray(loaded.Adapters[m].A));
            Assert.Equal(state.Adapters[m].B, backend.ToArray(loaded.Adapters[m].B));
        }
        Assert.Throws<InvalidOperationException>(() => job.Run());

        using var flora = FederatedJob.Create(BaseModel.Load(_checkpoint), ClientDataset.FromFolder(_data, [4, 2, 1]), Tiny("flora"));
        flora.Run();
        var error = Assert.Throws<InvalidOperationException>(() => flora.SaveAdapter(path));
        Assert.Contains("SaveModel", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Create_BadSettings_ThrowNamingThem()
    {
        var baseModel = BaseModel.Load(_checkpoint);
        var clients = ClientDataset.FromFolder(_data, [4, 2, 1]);
        Assert.Contains("'fedsgd' is unknown", Assert.Throws<ArgumentException>(() => FederatedJob.Create(baseModel, clients, Tiny("fedsgd"))).Message, StringComparison.Ordinal);
        Assert.Contains("context 64", Assert.Throws<ArgumentException>(() => FederatedJob.Create(baseModel, clients, Tiny("fedit") with { Context = 64 })).Message, StringComparison.Ordinal);
        Assert.Contains("2 rank budgets given for the 3 clients", Assert.Throws<ArgumentException>(() => ClientDataset.FromFolder(_data, [4, 2])).Message, StringComparison.Ordinal);
        Assert.Throws<FileNotFoundException>(() => BaseModel.Load(Path.Combine(_folder.FullName, "missing.safetensors")));
    }
}
