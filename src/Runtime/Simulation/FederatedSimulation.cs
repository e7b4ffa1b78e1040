using System.Diagnostics;
using FedLora.Federation;
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
/// <param name="DownloadBytes">Bytes of its assignment (the ledger adds any broadcast every client receives, such as FLoRA's merged update).</param>
/// <param name="UploadBytes">Bytes it sent.</param>
public sealed record ClientRoundResult(int Round, int ClientId, int Rank, float MeanLoss, long DownloadBytes, long UploadBytes);

/// <summary>What one round did, and the global model's held-out losses after it.</summary>
/// <param name="Round">0-based round.</param>
/// <param name="Clients">The sampled clients' results, in plan order.</param>
/// <param name="Evaluation">Mean loss per target token of the global model on each evaluation set, by name.</param>
/// <param name="DownloadBytes">All clients' downloads this round (including broadcasts to unsampled clients).</param>
/// <param name="UploadBytes">All uploads this round.</param>
/// <param name="Seconds">Wall time of the round, training and evaluation.</param>
public sealed record RoundResult(int Round, IReadOnlyList<ClientRoundResult> Clients, IReadOnlyDictionary<string, double> Evaluation,
    long DownloadBytes, long UploadBytes, double Seconds);

/// <summary>
/// Runs a federated job in one process: every round samples M clients, lets the strategy configure
/// them, trains each on its own data with the local trainer, collects the updates, aggregates, applies
/// any merged update to the base weights, and evaluates the global model. The networked server drives
/// the same strategy through the same steps.
/// </summary>
/// <remarks>
/// One <see cref="Gpt"/> serves every client in turn: clients share the base weights (every FLoRA
/// client applies the same merged update), and each trains its own <see cref="AdapterSet"/>.
/// </remarks>
public sealed class FederatedSimulation
{
    private readonly IFederatedStrategy _strategy;
    private readonly Gpt _model;
    private readonly IReadOnlyList<FederatedClient> _clients;
    private readonly IReadOnlyList<EvaluationSet> _evaluation;
    private readonly SimulationOptions _options;

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
        _strategy = strategy;
        _model = model;
        _clients = clients;
        _evaluation = evaluation;
        _options = options;
    }

    /// <summary>Bytes sent and received, per client per round.</summary>
    public CommunicationLedger Ledger { get; } = new();

    /// <summary>The global model's held-out losses before the first round (the starting point every method shares).</summary>
    public IReadOnlyDictionary<string, double>? InitialEvaluation { get; private set; }

    /// <summary>The global state after the last completed round.</summary>
    public GlobalState? State { get; private set; }

    /// <summary>Runs every round; <paramref name="onClientStep"/> and <paramref name="onRound"/> report progress.</summary>
    public IReadOnlyList<RoundResult> Run(Action<int, int, StepReport>? onClientStep = null, Action<RoundResult>? onRound = null,
        CancellationToken cancellation = default)
    {
        var state = _strategy.Initialize(new Random(_options.Seed));
        InitialEvaluation = Evaluate(state);
        var results = new List<RoundResult>();
        for (var round = 0; round < _options.Rounds; round++)
        {
            cancellation.ThrowIfCancellationRequested();
            var watch = Stopwatch.StartNew();
            var random = RoundRandom(_options.Seed, round);
            var sampled = Sample(random);
            var plan = _strategy.ConfigureRound(round, state, sampled, random);
            var updates = new List<ClientUpdate>();
            var clientResults = new List<ClientRoundResult>();
            var sent = new Dictionary<int, (long Down, long Up)>();
            foreach (var assignment in plan.Assignments)
            {
                cancellation.ThrowIfCancellationRequested();
                var (update, loss) = TrainClient(assignment, round, onClientStep);
                updates.Add(update);
                var down = WirePayload.SizeOf(assignment.Download);
                var up = WirePayload.SizeOf(update.Upload.ToArray());
                sent[assignment.ClientId] = (down, up);
                clientResults.Add(new ClientRoundResult(round, assignment.ClientId, assignment.Rank, loss, down, up));
            }
            var aggregation = _strategy.Aggregate(plan, state, updates);
            state = aggregation.State;
            if (aggregation.BaseUpdate is { } baseUpdate) GlobalModel.MergeIntoBase(_model, baseUpdate);
            RecordLedger(round, aggregation, sent);
            var evaluation = Evaluate(state);
            watch.Stop();
            var result = new RoundResult(round, clientResults, evaluation, Ledger.TotalDownload(round), Ledger.TotalUpload(round), watch.Elapsed.TotalSeconds);
            State = state;
            results.Add(result);
            onRound?.Invoke(result);
        }
        return results;
    }

    /// <summary>Evaluates the global model of <paramref name="state"/> on every evaluation set.</summary>
    public IReadOnlyDictionary<string, double> Evaluate(GlobalState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        return GlobalModel.Evaluate(_model, state, _evaluation);
    }

    /// <summary>
    /// The random source of round <paramref name="round"/>: a pure function of the seed and the round, so
    /// that a server restarted between rounds draws exactly what an uninterrupted run would.
    /// </summary>
    public static Random RoundRandom(int seed, int round) => new(unchecked(seed * 1_000_003 + (round + 1) * 7_919));

    /// <summary>The seed of client <paramref name="clientId"/>'s batches in round <paramref name="round"/>.</summary>
    public static int BatchSeed(int seed, int round, int clientId) => unchecked(seed * 1_000_003 + round * 1_009 + clientId);

    /// <summary>
    /// The round's clients: <paramref name="count"/> of ids 0..<paramref name="clientCount"/>-1 drawn
    /// without replacement from <paramref name="random"/>, in id order. The networked server draws with
    /// this too, so that both run the same rounds.
    /// </summary>
    public static IReadOnlyList<SampledClient> SampleClients(Random random, int clientCount, int count, Func<int, SampledClient> client)
    {
        ArgumentNullException.ThrowIfNull(random);
        ArgumentNullException.ThrowIfNull(client);
        var ids = Enumerable.Range(0, clientCount).ToArray();
        random.Shuffle(ids);
        return ids.Take(count).Order().Select(client).ToList();
    }

    private IReadOnlyList<SampledClient> Sample(Random random) =>
        SampleClients(random, _clients.Count, _options.ClientsPerRound, id => new SampledClient(id, _clients[id].ExampleCount, _clients[id].Budget));

    private (ClientUpdate Update, float Loss) TrainClient(ClientAssignment assignment, int round, Action<int, int, StepReport>? onClientStep)
    {
        var client = _clients[assignment.ClientId];
        var source = client.Batches(BatchSeed(_options.Seed, round, client.Id));
        return ClientTraining.Train(_model, assignment, source, _options.Local, step => onClientStep?.Invoke(round, client.Id, step));
    }

    /// <summary>Each client's bytes this round: its assignment and update (as sized in the loop) plus any broadcast every client receives.</summary>
    private void RecordLedger(int round, AggregationResult aggregation, Dictionary<int, (long Down, long Up)> sent)
    {
        var broadcast = WirePayload.SizeOf(aggregation.Broadcast.ToArray());
        foreach (var client in _clients)
        {
            var (down, up) = sent.GetValueOrDefault(client.Id);
            if (down + broadcast > 0 || up > 0) Ledger.Record(round, client.Id, down + broadcast, up);
        }
    }
}
