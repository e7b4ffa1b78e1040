using System.Diagnostics;
using FedLora.Federation;
using FedLora.Federation.Privacy;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;

namespace FedLora.Runtime;

/// <summary>A client of a federation: its id, its number of examples n_k, its budget and its private data.</summary>
/// <param name="Id">0-based client id.</param>
/// <param name="ExampleCount">n_k, the weight of its update (p_k = n_k / sum of n over the round's clients).</param>
/// <param name="Budget">Its LoRA rank or sketch ratio.</param>
/// <param name="Batches">A seeded stream of its training batches, from a seed.</param>
public sealed record FederatedClient(int Id, int ExampleCount, ClientBudget Budget, Func<int, ITokenBatchSource> Batches);

/// <summary>Held-out batches the global model is evaluated on each round (e.g. "all", or one Dolly category).</summary>
/// <param name="Name">Reported name.</param>
/// <param name="Batches">The batches, evaluated in order.</param>
public sealed record EvaluationSet(string Name, IReadOnlyList<TokenBatch> Batches);

/// <summary>The shape of a federated run.</summary>
/// <param name="Rounds">Rounds to run.</param>
/// <param name="ClientsPerRound">M, the clients sampled each round (without replacement).</param>
/// <param name="Local">Each sampled client's local training (a fresh AdamW every round).</param>
/// <param name="Seed">Seeds the global initialisation, the sampling, the strategies' draws and the clients' batches.</param>
public sealed record SimulationOptions(int Rounds, int ClientsPerRound, TrainingOptions Local, int Seed)
{
    /// <summary>The clip of each update's change (L2 norm) given its assignment, as the server applies it; null: none.</summary>
    public Func<ClientAssignment, double>? Clip { get; init; }

    /// <summary>Client-level differential privacy (<see cref="RuntimeOptions.Privacy"/>), with noise drawn from the seed; null: off.</summary>
    public DpMechanism? Privacy { get; init; }

    /// <summary>Throws with a message naming the bad option.</summary>
    public void Validate(int clientCount)
    {
        if (Rounds < 1) throw new ArgumentException($"Rounds is {Rounds}: a run needs at least one round");
        if (ClientsPerRound < 1 || ClientsPerRound > clientCount)
        {
            throw new ArgumentException($"ClientsPerRound is {ClientsPerRound}: it must be in [1, {clientCount}] (the number of clients)");
        }
        ArgumentNullException.ThrowIfNull(Local);
        Local.Validate();
    }
}

/// <summary>One client's local training in a round.</summary>
/// <param name="Round">The round.</param>
/// <param name="ClientId">The client.</param>
/// <param name="Rank">The rank it trained (m_k for an FSLoRA sketch).</param>
/// <param name="MeanLoss">Its mean training loss over the local steps.</param>
/// <param name="DownloadBytes">Bytes it downloaded: its assignment, and under FLoRA the base updates (or the base) it missed.</param>
/// <param name="UploadBytes">Bytes it sent.</param>
public sealed record ClientRoundResult(int Round, int ClientId, int Rank, float MeanLoss, long DownloadBytes, long UploadBytes);

/// <summary>What one round did, and the global model's held-out losses after it.</summary>
/// <param name="Round">0-based round.</param>
/// <param name="Clients">The sampled clients' results, in plan order.</param>
/// <param name="Evaluation">Mean loss per target token of the global model on each evaluation set, by name.</param>
/// <param name="DownloadBytes">All clients' downloads this round.</param>
/// <param name="UploadBytes">All uploads this round.</param>
/// <param name="Seconds">Wall time of the round, training and evaluation.</param>
public sealed record RoundResult(int Round, IReadOnlyList<ClientRoundResult> Clients, IReadOnlyDictionary<string, double> Evaluation,
    long DownloadBytes, long UploadBytes, double Seconds)
{
    /// <summary>Under DP, the epsilon spent so far and the round's clip; null otherwise.</summary>
    public RoundPrivacy? Privacy { get; init; }
}

/// <summary>
/// Runs a federated job in one process on the <see cref="FederatedRuntime"/> the networked server runs:
/// every round samples M clients, lets the strategy configure them, delivers each its assignment (and,
/// under FLoRA, the base updates it missed), trains it on its own data, takes its update through the
/// runtime's clip, aggregates, commits (merging any base update) and evaluates the global model. The
/// ledger counts the payloads as the server would send and receive them.
/// </summary>
/// <remarks>
/// One <see cref="Gpt"/> serves every client in turn: clients share the base weights, and each trains
/// its own <see cref="AdapterSet"/>. Each client is taken to hold the initial base, so under FLoRA it
/// downloads, when next sampled, the base updates merged since it last took part (or the whole base
/// when that is smaller), exactly what a networked client fetches.
/// </remarks>
public sealed class FederatedSimulation
{
    private readonly IReadOnlyList<FederatedClient> _clients;
    private readonly SimulationOptions _options;
    private readonly FederatedRuntime _runtime;

    /// <summary>Prepares a run; nothing is computed until <see cref="Run"/>.</summary>
    public FederatedSimulation(IFederatedStrategy strategy, Gpt model, IReadOnlyList<FederatedClient> clients,
        IReadOnlyList<EvaluationSet> evaluation, SimulationOptions options)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clients);
        ArgumentNullException.ThrowIfNull(evaluation);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(clients.Count);
        for (var i = 0; i < clients.Count; i++)
        {
            if (clients[i].Id != i) throw new ArgumentException($"client ids must be 0..{clients.Count - 1} in order; position {i} holds id {clients[i].Id}", nameof(clients));
        }
        _clients = clients;
        _options = options;
        _runtime = new FederatedRuntime(strategy, model, new RuntimeOptions(options.Seed, options.ClientsPerRound, evaluation) { Clip = options.Clip, Privacy = options.Privacy });
    }

    /// <summary>Bytes sent and received, per client per round.</summary>
    public CommunicationLedger Ledger => _runtime.Ledger;

    /// <summary>The global model's held-out losses before the first round (the starting point every method shares).</summary>
    public IReadOnlyDictionary<string, double>? InitialEvaluation { get; private set; }

    /// <summary>The global state after the last completed round (null before <see cref="Run"/>).</summary>
    public GlobalState? State { get; private set; }

    /// <summary>Runs every round; <paramref name="onClientStep"/> and <paramref name="onRound"/> report progress.</summary>
    public IReadOnlyList<RoundResult> Run(Action<int, int, StepReport>? onClientStep = null, Action<RoundResult>? onRound = null,
        CancellationToken cancellation = default)
    {
        if (_runtime.State.Round != 0) throw new InvalidOperationException("a simulation runs once");
        InitialEvaluation = _runtime.Evaluate();
        var population = _clients.Select(c => new SampledClient(c.Id, c.ExampleCount, c.Budget)).ToList();
        var baseVersions = new int[_clients.Count];
        var results = new List<RoundResult>();
        for (var round = 0; round < _options.Rounds; round++)
        {
            cancellation.ThrowIfCancellationRequested();
            var watch = Stopwatch.StartNew();
            var plan = _runtime.Configure(population);
            var updates = new List<AdmittedUpdate>();
            var clientResults = new List<ClientRoundResult>();
            foreach (var assignment in plan.Assignments)
            {
                cancellation.ThrowIfCancellationRequested();
                var id = assignment.ClientId;
                var catchUp = _runtime.CatchUp(baseVersions[id]);
                var down = catchUp.Length + AssignmentCodec.Encode(assignment).LongLength;
                _runtime.RecordDownload(id, down);
                baseVersions[id] = catchUp.To;
                var source = _clients[id].Batches(RoundSchedule.BatchSeed(_options.Seed, round, id));
                var (update, loss) = ClientTraining.Train(_runtime.Model, assignment, source, _options.Local, step => onClientStep?.Invoke(round, id, step));
                var up = WirePayload.Serialize(update.Upload).LongLength;
                updates.Add(_runtime.Admit(assignment, update, up));
                clientResults.Add(new ClientRoundResult(round, id, assignment.Rank, loss, down, up));
            }
            var close = _runtime.Close(plan, updates);
            _runtime.Commit(close);
            var evaluation = _runtime.Evaluate();
            watch.Stop();
            var result = new RoundResult(round, clientResults, evaluation, Ledger.TotalDownload(round), Ledger.TotalUpload(round), watch.Elapsed.TotalSeconds)
            {
                Privacy = close.Privacy,
            };
            State = _runtime.State;
            results.Add(result);
            onRound?.Invoke(result);
        }
        return results;
    }
}
