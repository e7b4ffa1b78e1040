using System.Text.Json.Serialization;
using FedLora.Model;

namespace FedLora.Federation.Networking;

/// <summary>Where the job stands.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<RoundPhase>))]
public enum RoundPhase
{
    /// <summary>Waiting for every client to enroll before round 0.</summary>
    Enrolling,

    /// <summary>The current round's assignments are out; updates are collected.</summary>
    Collecting,

    /// <summary>Every round is done.</summary>
    Finished,
}

/// <summary>A snapshot of the job for <c>GET /v1/status</c>.</summary>
/// <param name="Phase">Where the job stands.</param>
/// <param name="Round">The round collecting (or the number of rounds when finished).</param>
/// <param name="Rounds">Rounds of the job.</param>
/// <param name="Enrolled">Clients enrolled.</param>
/// <param name="Sampled">The current round's sampled client ids.</param>
/// <param name="Received">The client ids whose update was accepted this round.</param>
/// <param name="Quorum">Updates needed to close at the deadline.</param>
/// <param name="SecondsToDeadline">Time left before the round may close with the quorum (negative once passed).</param>
public sealed record RoundStatus(RoundPhase Phase, int Round, int Rounds, int Enrolled, int[] Sampled, int[] Received, int Quorum, double SecondsToDeadline);

/// <summary>What a client gets when it asks for its assignment.</summary>
/// <param name="Phase">Where the job stands.</param>
/// <param name="Round">The current round.</param>
/// <param name="Payload">The assignment payload if the client is sampled and has not reported yet, else null (wait).</param>
/// <param name="BaseVersion">The base weights' version the assignment trains on.</param>
public sealed record AssignmentReply(RoundPhase Phase, int Round, byte[]? Payload, int BaseVersion);

/// <summary>
/// The server's round loop as a state machine, without HTTP: the same steps as
/// <see cref="FederatedSimulation.Run"/> (sample with the round's random source, configure, collect,
/// aggregate in plan order, merge FLoRA's base update, record the ledger), except that updates arrive
/// from clients. A round closes when every sampled client reported, or at its deadline once the quorum
/// did; updates for any other round are refused. Thread-safe: every transition holds one lock.
/// </summary>
public sealed class RoundCoordinator
{
    private readonly Lock _gate = new();
    private readonly IFederatedStrategy _strategy;
    private readonly Gpt _model;
    private readonly IReadOnlyList<ClientBudget> _budgets;
    private readonly ServerOptions _options;
    private readonly StateStore? _store;
    private readonly TimeProvider _time;
    private readonly int?[] _exampleCounts;
    private readonly Dictionary<int, ClientUpdate> _received = [];
    private readonly Dictionary<int, long> _uploadBytes = [];
    private readonly Dictionary<int, byte[]> _payloads = [];
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private GlobalState _state;
    private RoundPlan? _plan;
    private DateTimeOffset _deadline;
    private ServerProgress? _progress;
    private int _baseVersion;

    /// <summary>Starts the job, or resumes it from <see cref="ServerOptions.StateDirectory"/> if that holds a committed round.</summary>
    public RoundCoordinator(IFederatedStrategy strategy, Gpt model, IReadOnlyList<ClientBudget> budgets, ServerOptions options, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(budgets);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(budgets.Count);
        _strategy = strategy;
        _model = model;
        _budgets = budgets;
        _options = options;
        _time = time ?? TimeProvider.System;
        _exampleCounts = new int?[budgets.Count];
        _store = options.StateDirectory is null ? null : new StateStore(options.StateDirectory);
        _progress = _store?.LoadProgress();
        if (_progress is { } progress)
        {
            if (progress.Strategy != strategy.Name || progress.Seed != options.Seed || progress.ExampleCounts.Length != budgets.Count)
            {
                throw new InvalidOperationException(
                    $"the state folder {options.StateDirectory} holds a {progress.Strategy} job with seed {progress.Seed} and {progress.ExampleCounts.Length} clients, not this {strategy.Name} job with seed {options.Seed} and {budgets.Count} clients");
            }
            _state = _store!.LoadState(progress);
            _store.LoadBase(progress, model);
            _baseVersion = progress.BaseVersion;
            for (var i = 0; i < budgets.Count; i++) _exampleCounts[i] = progress.ExampleCounts[i];
            foreach (var entry in progress.Ledger) Ledger.Record(entry.Round, entry.ClientId, entry.DownloadBytes, entry.UploadBytes);
            OpenRound();
        }
        else
        {
            _state = strategy.Initialize(new Random(options.Seed));
        }
    }

    /// <summary>Bytes per client per round, as the simulation counts them.</summary>
    public CommunicationLedger Ledger { get; } = new();

    /// <summary>Completes when the last round has been aggregated.</summary>
    public Task Finished => _finished.Task;

    /// <summary>Raised (under the lock) after each round is aggregated and persisted.</summary>
    public event Action<int>? RoundCompleted;

    /// <summary>Where the job stands.</summary>
    public RoundPhase Phase { get; private set; } = RoundPhase.Enrolling;

    /// <summary>The global state after the last aggregated round.</summary>
    public GlobalState State
    {
        get { lock (_gate) return _state; }
    }

    /// <summary>The server's model (base weights); read it under <see cref="WithModel{T}"/>.</summary>
    public T WithModel<T>(Func<Gpt, int, T> read)
    {
        ArgumentNullException.ThrowIfNull(read);
        lock (_gate) return read(_model, _baseVersion);
    }

    /// <summary>
    /// Records client <paramref name="clientId"/>'s n_k. Round 0 opens once every client has enrolled;
    /// enrolling again with the same count is harmless, with another count is refused (409).
    /// </summary>
    public void Enroll(int clientId, int exampleCount)
    {
        if (exampleCount < 1) throw new UploadRejectedException(400, $"client {clientId} reports {exampleCount} examples: it needs at least one");
        lock (_gate)
        {
            if (_exampleCounts[clientId] is { } known && known != exampleCount)
            {
                throw new UploadRejectedException(409, $"client {clientId} enrolled with {known} examples and now reports {exampleCount}: its data shard must not change during a job");
            }
            _exampleCounts[clientId] = exampleCount;
            if (Phase == RoundPhase.Enrolling && _exampleCounts.All(n => n is not null)) OpenRound();
        }
    }

    /// <summary>Client <paramref name="clientId"/>'s assignment for the current round, if it is sampled and has not reported.</summary>
    public AssignmentReply AssignmentFor(int clientId)
    {
        lock (_gate)
        {
            if (Phase != RoundPhase.Collecting || _received.ContainsKey(clientId) || !_payloads.TryGetValue(clientId, out var payload))
            {
                return new AssignmentReply(Phase, _state.Round, null, _baseVersion);
            }
            return new AssignmentReply(Phase, _state.Round, payload, _baseVersion);
        }
    }

    /// <summary>
    /// Validates and accepts client <paramref name="clientId"/>'s update for <paramref name="round"/>;
    /// closes the round if it was the last one missing. Throws <see cref="UploadRejectedException"/>
    /// (the global state untouched) when the round is not the one collecting (409), the client was
    /// not sampled (403), it already reported (409), or the payload does not match its assignment (400/413).
    /// </summary>
    public void Submit(int clientId, int round, ReadOnlyMemory<byte> payload)
    {
        ClientAssignment assignment;
        lock (_gate)
        {
            assignment = CheckOpen(clientId, round);
        }
        var update = UpdateValidator.Decode(assignment, payload, _options.MaxUploadBytes);
        lock (_gate)
        {
            CheckOpen(clientId, round);
            _received[clientId] = update;
            _uploadBytes[clientId] = WirePayload.SizeOf(update.Upload.ToArray());
            if (_received.Count != _plan!.Assignments.Count) return;
            try
            {
                CloseRound();
            }
            catch (ArgumentException e)
            {
                // The strategy refused the round. UpdateValidator makes every check the strategies make, so
                // this should not happen; if it does, take this update back: the round stays open, the state untouched.
                _received.Remove(clientId);
                _uploadBytes.Remove(clientId);
                throw new UploadRejectedException(400, $"the {_strategy.Name} strategy refused round {round} with client {clientId}'s update: {e.Message}");
            }
        }
    }

    /// <summary>Closes the round if its deadline has passed and the quorum reported; call it periodically.</summary>
    public void Tick()
    {
        lock (_gate)
        {
            if (Phase == RoundPhase.Collecting && _time.GetUtcNow() >= _deadline && _received.Count >= Quorum) CloseRound();
        }
    }

    /// <summary>A snapshot for the status endpoint.</summary>
    public RoundStatus Status()
    {
        lock (_gate)
        {
            return new RoundStatus(Phase, _state.Round, _options.Rounds, _exampleCounts.Count(n => n is not null),
                _plan?.Assignments.Select(a => a.ClientId).ToArray() ?? [], [.. _received.Keys.Order()], Quorum,
                Phase == RoundPhase.Collecting ? (_deadline - _time.GetUtcNow()).TotalSeconds : 0);
        }
    }

    private int Quorum => _options.Quorum ?? _options.ClientsPerRound;

    private ClientAssignment CheckOpen(int clientId, int round)
    {
        if (Phase == RoundPhase.Finished) throw new UploadRejectedException(409, $"the job is finished: round {round} no longer accepts updates");
        if (Phase == RoundPhase.Enrolling) throw new UploadRejectedException(409, $"round {round} has not opened: the server is still waiting for every client to enroll");
        if (round < _state.Round) throw new UploadRejectedException(409, $"round {round} is closed (late update refused); the current round is {_state.Round}");
        if (round > _state.Round) throw new UploadRejectedException(409, $"round {round} has not opened; the current round is {_state.Round}");
        if (!_payloads.ContainsKey(clientId)) throw new UploadRejectedException(403, $"client {clientId} was not sampled in round {round}");
        if (_received.ContainsKey(clientId)) throw new UploadRejectedException(409, $"client {clientId} already reported for round {round}");
        return _plan!.For(clientId);
    }

    private void OpenRound()
    {
        _received.Clear();
        _uploadBytes.Clear();
        _payloads.Clear();
        if (_state.Round >= _options.Rounds)
        {
            Phase = RoundPhase.Finished;
            _plan = null;
            _finished.TrySetResult();
            return;
        }
        var random = FederatedSimulation.RoundRandom(_options.Seed, _state.Round);
        _plan = _strategy.ConfigureRound(_state.Round, _state, Sample(random), random);
        foreach (var assignment in _plan.Assignments) _payloads[assignment.ClientId] = AssignmentCodec.Encode(assignment);
        _deadline = _time.GetUtcNow() + _options.RoundDeadline;
        Phase = RoundPhase.Collecting;
    }

    /// <summary>M clients without replacement, in id order: exactly the simulation's draw from the round's random source.</summary>
    private IReadOnlyList<SampledClient> Sample(Random random) =>
        FederatedSimulation.SampleClients(random, _budgets.Count, _options.ClientsPerRound, id => new SampledClient(id, _exampleCounts[id]!.Value, _budgets[id]));

    private void CloseRound()
    {
        var plan = _plan!;
        var updates = plan.Assignments.Where(a => _received.ContainsKey(a.ClientId)).Select(a => _received[a.ClientId]).ToList();
        var aggregation = _strategy.Aggregate(plan, _state, updates);
        if (aggregation.BaseUpdate is { } baseUpdate)
        {
            GlobalModel.MergeIntoBase(_model, baseUpdate);
            _baseVersion++;
        }
        var broadcast = WirePayload.SizeOf(aggregation.Broadcast.ToArray());
        for (var id = 0; id < _budgets.Count; id++)
        {
            var assigned = plan.Assignments.FirstOrDefault(a => a.ClientId == id);
            var down = (assigned is null ? 0 : WirePayload.SizeOf(assigned.Download)) + broadcast;
            var up = _uploadBytes.GetValueOrDefault(id);
            if (down > 0 || up > 0) Ledger.Record(plan.Round, id, down, up);
        }
        _state = aggregation.State;
        if (_store is not null)
        {
            _progress = _store.Save(_progress, _state, aggregation.BaseUpdate is null ? null : _model, _strategy.Name, _options.Seed, _baseVersion,
                _exampleCounts.Select(n => n!.Value).ToArray(), Ledger.Entries);
        }
        RoundCompleted?.Invoke(plan.Round);
        OpenRound();
    }
}
