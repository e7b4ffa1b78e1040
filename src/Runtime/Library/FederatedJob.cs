using FedLora.Federation;
using FedLora.Kernels;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;

namespace FedLora.Runtime;

/// <summary>
/// A base model checkpoint, read into memory once and checked. Every <see cref="FederatedJob"/> loads
/// its own copy of the weights from it, so nothing a job does (FLoRA merges its rounds into the base
/// weights) reaches this object or the file.
/// </summary>
public sealed class BaseModel
{
    private readonly SafetensorsFile _file;

    private BaseModel(string path, SafetensorsFile file, GptConfig config)
    {
        Path = path;
        _file = file;
        Config = config;
    }

    /// <summary>Where the checkpoint was read from.</summary>
    public string Path { get; }

    /// <summary>The model's shape, from the checkpoint.</summary>
    public GptConfig Config { get; }

    /// <summary>Reads the checkpoint at <paramref name="path"/> (written by <c>fedlora pretrain</c> or <see cref="GptCheckpoint.Save"/>).</summary>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="InvalidDataException">The file is not a FedLora GPT checkpoint.</exception>
    public static BaseModel Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"base model '{path}' does not exist: pass the path of a GPT checkpoint (safetensors), e.g. the repository's models/base.safetensors", path);
        var file = SafetensorsFile.Load(path);
        return new BaseModel(System.IO.Path.GetFullPath(path), file, GptCheckpoint.ReadConfig(file));
    }

    /// <summary>A fresh model with these weights on <paramref name="backend"/>; the caller owns it.</summary>
    internal Gpt Instantiate(Backend backend, int batch, int context)
    {
        var model = new Gpt(backend, Config, batch, context);
        try
        {
            GptCheckpoint.LoadWeights(_file, model);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}

/// <summary>
/// Federated clients made from a folder of instruction data, one rank budget each: the folder holds
/// <c>local_training_0.json</c> .. <c>local_training_{K-1}.json</c> (client k's records) and
/// <c>global_test.json</c> (the held-out set every round is evaluated on), in Dolly-15k's format
/// (instruction, context, response, category), as the repository's data/dolly15k-fedit-10/ does.
/// </summary>
public sealed class ClientDataset
{
    private ClientDataset(string folder, IReadOnlyList<IReadOnlyList<InstructionExample>> clients, IReadOnlyList<InstructionExample> heldOut, int[] ranks)
    {
        Folder = folder;
        Clients = clients;
        HeldOut = heldOut;
        RankBudgets = ranks;
    }

    /// <summary>The folder the data came from.</summary>
    public string Folder { get; }

    /// <summary>Client k's rank budget r_k, in client order.</summary>
    public IReadOnlyList<int> RankBudgets { get; }

    /// <summary>Number of clients.</summary>
    public int Count => Clients.Count;

    internal IReadOnlyList<IReadOnlyList<InstructionExample>> Clients { get; }

    internal IReadOnlyList<InstructionExample> HeldOut { get; }

    /// <summary>Loads and tokenizes <paramref name="folder"/>; <paramref name="rankBudgets"/> gives one LoRA rank (>= 1) per client.</summary>
    /// <exception cref="ArgumentException">The budgets are not one per client, or one is below 1.</exception>
    /// <exception cref="DirectoryNotFoundException">There is no such folder.</exception>
    /// <exception cref="FileNotFoundException">A client file or global_test.json is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed; the message names it.</exception>
    public static ClientDataset FromFolder(string folder, IReadOnlyList<int> rankBudgets)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentNullException.ThrowIfNull(rankBudgets);
        var data = Dolly.LoadFederated(folder);
        if (rankBudgets.Count != data.Clients.Count)
        {
            throw new ArgumentException($"{rankBudgets.Count} rank budgets given for the {data.Clients.Count} clients in {folder}: give exactly one per client", nameof(rankBudgets));
        }
        for (var k = 0; k < rankBudgets.Count; k++)
        {
            if (rankBudgets[k] < 1) throw new ArgumentException($"client {k}'s rank budget is {rankBudgets[k]}: it must be >= 1", nameof(rankBudgets));
            if (data.Clients[k].Count == 0) throw new ArgumentException($"client {k} has no records in {folder}: every client needs at least one", nameof(folder));
        }
        var clients = data.Clients.Select(records => (IReadOnlyList<InstructionExample>)records.Select(InstructionTemplate.Tokenize).ToArray()).ToArray();
        return new ClientDataset(System.IO.Path.GetFullPath(folder), clients, data.Test.Select(InstructionTemplate.Tokenize).ToArray(), [.. rankBudgets]);
    }
}

/// <summary>How a <see cref="FederatedJob"/> runs; every value has the <c>fedlora simulate</c> default.</summary>
public sealed record FederatedJobSettings
{
    /// <summary>The method: fslora, flora, fedit, zero-padding, hetlora, flexlora or ffa-lora.</summary>
    public string Method { get; init; } = "fslora";

    /// <summary>Federated rounds.</summary>
    public int Rounds { get; init; } = 20;

    /// <summary>Clients sampled each round.</summary>
    public int ClientsPerRound { get; init; } = 5;

    /// <summary>AdamW steps each sampled client takes per round.</summary>
    public int LocalSteps { get; init; } = 10;

    /// <summary>The clients' learning rate.</summary>
    public float LearningRate { get; init; } = 2e-3f;

    /// <summary>Examples per local step.</summary>
    public int Batch { get; init; } = 8;

    /// <summary>Tokens per example window (at most the model's context length).</summary>
    public int Context { get; init; } = 128;

    /// <summary>The layers with adapters.</summary>
    public LoraTargets Targets { get; init; } = LoraTargets.All;

    /// <summary>LoRA alpha of the global rank r; null for 2r.</summary>
    public float? Alpha { get; init; }

    /// <summary>Seed of sampling, initialisation and batches: the same seed gives the same run bit for bit.</summary>
    public int Seed { get; init; } = 1234;

    /// <summary>The backend, as <c>--device</c> names it: cpu, reference, ilgpu-cpu, cuda[:N] or opencl[:N].</summary>
    public string Device { get; init; } = "cpu";
}

/// <summary>
/// One federated LoRA fine-tuning job in this process: a base model, clients with rank budgets, a
/// method. The job works on its own copy of the base weights; <see cref="Run"/> trains every round,
/// then <see cref="SaveAdapter"/> or <see cref="SaveModel"/> writes the result.
/// </summary>
/// <remarks>
/// Budgets map to methods as in <c>fedlora simulate</c>: the global rank r is the largest budget;
/// FSLoRA gives client k a sketch of r_k of r ranks; FLoRA, zero-padding, HetLoRA and FlexLoRA train
/// rank r_k; FedIT and FFA-LoRA average one shape, so every client trains the smallest budget.
/// </remarks>
public sealed class FederatedJob : IDisposable
{
    private readonly Backend _backend;
    private readonly Gpt _model;
    private readonly FederatedSimulation _simulation;
    private IReadOnlyList<RoundResult>? _rounds;

    private FederatedJob(Backend backend, Gpt model, FederatedSimulation simulation, LoraSettings lora)
    {
        _backend = backend;
        _model = model;
        _simulation = simulation;
        Lora = lora;
    }

    /// <summary>The global rank, alpha and scaling the method runs with.</summary>
    public LoraSettings Lora { get; }

    /// <summary>The global state after the last round; null before <see cref="Run"/>.</summary>
    public GlobalState? State => _simulation.State;

    /// <summary>Bytes each client downloaded and uploaded, per round, as serialized.</summary>
    public CommunicationLedger Ledger => _simulation.Ledger;

    /// <summary>
    /// Prepares a job and checks every setting against the model and the data (an unknown method, a rank
    /// above a layer's width, more clients per round than clients) before any training.
    /// </summary>
    /// <exception cref="ArgumentException">A setting is invalid; the message says which and what to change.</exception>
    public static FederatedJob Create(BaseModel baseModel, ClientDataset clients, FederatedJobSettings settings)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(clients);
        ArgumentNullException.ThrowIfNull(settings);
        if (!StrategyCatalog.Names.Contains(settings.Method))
        {
            throw new ArgumentException($"method '{settings.Method}' is unknown: choose one of {string.Join(", ", StrategyCatalog.Names)}", nameof(settings));
        }
        if (settings.Context < 1 || settings.Context > baseModel.Config.ContextLength)
        {
            throw new ArgumentException($"context {settings.Context} must be in [1, {baseModel.Config.ContextLength}], the model's context length", nameof(settings));
        }
        if (settings.Batch < 1) throw new ArgumentException($"batch {settings.Batch} must be >= 1", nameof(settings));
        var backend = Backends.Create(settings.Device);
        Gpt? model = null;
        try
        {
            model = baseModel.Instantiate(backend, settings.Batch, settings.Context);
            var modules = model.Layout.LoraModules(settings.Targets);
            var (lora, budgets) = StrategyCatalog.Budgets(settings.Method, clients.RankBudgets, clients.RankBudgets.Max(), settings.Alpha);
            var strategy = StrategyCatalog.Create(settings.Method, modules, lora);
            var federated = clients.Clients.Select((examples, id) => new FederatedClient(id, examples.Count, budgets[id],
                seed => new InstructionBatcher(examples, settings.Batch, settings.Context, seed))).ToList();
            var evaluation = new[] { new EvaluationSet("all", InstructionBatcher.InOrder(clients.HeldOut, settings.Batch, settings.Context).ToList()) };
            var options = new SimulationOptions(settings.Rounds, settings.ClientsPerRound, new TrainingOptions(settings.LocalSteps, settings.LearningRate), settings.Seed);
            var simulation = new FederatedSimulation(strategy, model, federated, evaluation, options);
            return new FederatedJob(backend, model, simulation, lora);
        }
        catch
        {
            model?.Dispose();
            backend.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Trains every round; <paramref name="onRound"/> gets each round's result (held-out loss, bytes down and
    /// up, per-client losses) as it completes. A job runs once.
    /// </summary>
    /// <exception cref="InvalidOperationException">The job has already run.</exception>
    public IReadOnlyList<RoundResult> Run(Action<RoundResult>? onRound = null, CancellationToken cancellation = default)
    {
        if (_rounds is not null) throw new InvalidOperationException("this job has already run: create a new FederatedJob to run again");
        _rounds = _simulation.Run(onRound: onRound, cancellation: cancellation);
        return _rounds;
    }

    /// <summary>
    /// Writes the global adapter (peft's tensor names) to <paramref name="path"/>, atomically. FLoRA has
    /// none: it merges every round into the base weights, so save its result with <see cref="SaveModel"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The job has not run, or the method keeps no adapter (FLoRA).</exception>
    public void SaveAdapter(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var state = State ?? throw new InvalidOperationException("the job has not run yet: call Run first");
        using var adapters = GlobalModel.Adapters(_model, state)
            ?? throw new InvalidOperationException("this method keeps no global adapter (FLoRA merges every round into the base weights): save the model with SaveModel");
        AdapterFile.Save(adapters, path);
    }

    /// <summary>
    /// Writes the fine-tuned model to <paramref name="path"/>, atomically: the base weights (with FLoRA's
    /// merged rounds) with the global adapter merged in, a plain checkpoint that needs no adapter.
    /// </summary>
    /// <exception cref="InvalidOperationException">The job has not run.</exception>
    public void SaveModel(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var state = State ?? throw new InvalidOperationException("the job has not run yet: call Run first");
        var weights = _backend.ToArray(_model.Parameters);
        try
        {
            using var adapters = GlobalModel.Adapters(_model, state);
            if (adapters is not null)
            {
                for (var m = 0; m < adapters.Modules.Count; m++)
                {
                    adapters.Adapters[m].Merge(_backend, _model.Layout.View(_model.Parameters, adapters.Modules[m].Name + ".weight"));
                }
            }
            GptCheckpoint.Save(_model, path);
        }
        finally
        {
            _backend.Upload(weights, _model.Parameters);
        }
    }

    /// <summary>Releases the job's model and backend.</summary>
    public void Dispose()
    {
        _model.Dispose();
        _backend.Dispose();
    }
}
