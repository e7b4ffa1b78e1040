using System.Text.Json.Serialization;
using FedLora.Federation;
using FedLora.Model;
using FedLora.Runtime;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FedLora.Server;

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

/// <summary>A snapshot of the job for <c>GET /v1/status</c>: the whole round for the operator, a client's own part for a client.</summary>
/// <param name="Phase">Where the job stands.</param>
/// <param name="Round">The round collecting (or the number of rounds when finished).</param>
/// <param name="Rounds">Rounds of the job.</param>
/// <param name="Enrolled">Clients enrolled.</param>
/// <param name="Sampled">The current round's sampled client ids (a client sees only its own id, if sampled).</param>
/// <param name="Received">The client ids whose update was accepted this round (a client sees only its own id, if accepted).</param>
/// <param name="Quorum">Updates needed to close at the deadline.</param>
/// <param name="SecondsToDeadline">Time left before the round may close with the quorum (negative once passed).</param>
public sealed record RoundStatus(RoundPhase Phase, int Round, int Rounds, int Enrolled, int[] Sampled, int[] Received, int Quorum, double SecondsToDeadline);

/// <summary>What a client gets when it asks for its assignment.</summary>
/// <param name="Phase">Where the job stands.</param>
/// <param name="Round">The current round.</param>
/// <param name="Payload">The assignment payload if the client is sampled and has not reported yet, else null (wait).</param>
/// <param name="BaseVersion">The base weights' version the assignment trains on.</param>
public sealed record AssignmentReply(RoundPhase Phase, int Round, byte[]? Payload, int BaseVersion);

/// <summary>What the server measured after a committed round, for <c>GET /v1/metrics</c>.</summary>
/// <param name="Round">The round (0-based).</param>
/// <param name="Loss">The global model's mean loss per target token on each of the server's evaluation sets, by name (empty without a test set).</param>
/// <param name="Updates">The updates aggregated.</param>
/// <param name="DownloadBytes">Bytes sent to clients in the round.</param>
/// <param name="UploadBytes">Bytes of the updates taken in the round.</param>
/// <param name="Task">Task metrics of the global model over the whole test set (accuracy, exact match, ROUGE-L...), when measured this round.</param>
public sealed record RoundMetrics(int Round, IReadOnlyDictionary<string, double> Loss, int Updates, long DownloadBytes, long UploadBytes,
    IReadOnlyDictionary<string, double>? Task = null)
{
    /// <summary>Under DP, the epsilon the job has spent after this round (null without DP, or when unbounded: z = 0).</summary>
    public double? Epsilon { get; init; }

    /// <summary>Under DP, the clip of the next round (adaptive clipping moves it); a restarted server resumes from it.</summary>
    public double? DpClip { get; init; }
}

/// <summary>How the server evaluates the global model after each round.</summary>
/// <param name="Sets">Held-out sets whose mean loss per target token is measured every round.</param>
public sealed record ServerEvaluation(IReadOnlyList<EvaluationSet> Sets)
{
    /// <summary>
    /// Task metrics of the global model (given with its adapters attached) after round r (0-based), by metric name;
    /// null when they are not due that round. Null: never.
    /// </summary>
    public Func<Gpt, int, IReadOnlyDictionary<string, double>?>? TaskMetrics { get; init; }
}

/// <summary>Bytes a base download sent a client (see <see cref="RoundCoordinator.BaseFor"/>).</summary>
/// <param name="Version">The base version the payload brings the client to.</param>
/// <param name="Payload">The payload: the base updates the client missed, or the whole base.</param>
/// <param name="Full">Whether it is the whole base.</param>
public sealed record BaseReply(int Version, byte[] Payload, bool Full);

/// <summary>
/// The server's round loop as a state machine, without HTTP, on the <see cref="FederatedRuntime"/> the
/// in-process simulation runs (sampling, seeds, the strategy, the clip, the aggregate's check, FLoRA's base
/// updates, the ledger, the evaluation), except that updates arrive from clients. A round closes when every sampled client reported, or at its deadline once the quorum
/// did; updates for any other round are refused. Each update's change is clipped
/// (<see cref="UpdateGuard"/>) and kept in the state folder as soon as it is accepted; the aggregate is
/// checked before it is committed, and a round closes transactionally: the in-memory state changes only
/// after the save succeeded. Thread-safe: every transition holds one lock.
/// </summary>
public sealed class RoundCoordinator
{
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(60);
    private readonly Lock _gate = new();
    private readonly IFederatedStrategy _strategy;
    private readonly FederatedRuntime _runtime;
    private readonly IReadOnlyList<ClientBudget> _budgets;
    private readonly ServerOptions _options;
    private readonly StateStore? _store;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly int?[] _exampleCounts;
    private readonly Dictionary<int, AdmittedUpdate> _received = [];
    private readonly HashSet<int> _discarded = [];
    private readonly HashSet<int> _uploading = [];
    private readonly Dictionary<int, byte[]> _payloads = [];
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly string _baseFingerprint;
    private readonly ServerEvaluation? _evaluation;
    private (int Version, byte[] Payload)? _fullBase;
    private RoundPlan? _plan;
    private DateTimeOffset _deadline;
    private ServerProgress? _progress;
    private bool _resumePending;
    private int _failedSaves;
    private DateTimeOffset _nextCloseAttempt;

    /// <summary>
    /// Starts the job, or resumes it from <see cref="ServerOptions.StateDirectory"/> if that holds a committed round or accepted
    /// updates. <paramref name="model"/> holds the job's initial base weights (a resumed job merges its committed base updates
    /// into them); the global model is evaluated as <paramref name="evaluation"/> says after each round.
    /// </summary>
    public RoundCoordinator(IFederatedStrategy strategy, Gpt model, IReadOnlyList<ClientBudget> budgets, ServerOptions options, TimeProvider? time = null,
        ILogger? logger = null, ServerEvaluation? evaluation = null)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(budgets);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(budgets.Count);
        if (options.Aggregation != AggregationRule.Strategy && !RobustAggregation.Supports(strategy.Name))
        {
            throw new ArgumentException($"{options.Aggregation} aggregation is for the averaging methods whose clients all train the global rank (fedit, ffa-lora), not {strategy.Name}");
        }
        _strategy = strategy;
        _runtime = new FederatedRuntime(strategy, model, new RuntimeOptions(options.Seed, options.ClientsPerRound, evaluation?.Sets ?? [])
        {
            Clip = options.ClipOf,
            Aggregate = options.Aggregation == AggregationRule.Strategy ? null
                : (plan, state, updates) => new AggregationResult(RobustAggregation.Aggregate(strategy.Name, state, updates, options.Aggregation, options.TrimFraction)),
            Privacy = options.Privacy?.Resolve(budgets.Count, options.ClientsPerRound, options.Rounds),
            SecretNoise = true,
        });
        _baseFingerprint = BasePayload.Fingerprint(model);
        _evaluation = evaluation;
        _budgets = budgets;
        _options = options;
        _time = time ?? TimeProvider.System;
        _log = logger ?? NullLogger.Instance;
        _exampleCounts = new int?[budgets.Count];
        _store = options.StateDirectory is null ? null : new StateStore(options.StateDirectory);
        _progress = _store?.LoadProgress();
        if (_store is not null)
        {
            var removed = _store.RemoveOrphans(_progress);
            if (removed.Count > 0) ServerLog.OrphansRemoved(_log, removed.Count, string.Join(", ", removed.Take(20)));
            _resumePending = true;
        }
        if (_progress is { } progress)
        {
            if (progress.Strategy != strategy.Name || progress.Seed != options.Seed || progress.ExampleCounts.Length != budgets.Count)
            {
                throw new InvalidOperationException(
                    $"the state folder {options.StateDirectory} holds a {progress.Strategy} job with seed {progress.Seed} and {progress.ExampleCounts.Length} clients, not this {strategy.Name} job with seed {options.Seed} and {budgets.Count} clients");
            }
            if (progress.BaseFingerprint != _baseFingerprint)
            {
                throw new InvalidOperationException(
                    $"the state folder {options.StateDirectory} holds a job on other base weights (SHA-256 {progress.BaseFingerprint[..12]}..., this model's is {_baseFingerprint[..12]}...): start the server with the job's --model");
            }
            _runtime.Restore(_store!.LoadState(progress), _store.LoadBaseUpdates(progress), progress.Ledger,
                privacyClip: progress.Metrics.LastOrDefault(m => m.DpClip is not null)?.DpClip);
            for (var i = 0; i < budgets.Count; i++) _exampleCounts[i] = progress.ExampleCounts[i];
            Metrics.AddRange(progress.Metrics);
            OpenRound();
        }
    }

    /// <summary>Bytes per client per round, as the simulation counts them.</summary>
    public CommunicationLedger Ledger => _runtime.Ledger;

    /// <summary>Under DP, the clip of the round being collected (adaptive clipping moves it); null otherwise.</summary>
    public double? PrivacyClip
    {
        get { lock (_gate) return _runtime.PrivacyClip; }
    }

    /// <summary>SHA-256 of the job's initial base weights: a client whose own base matches needs no base download to start.</summary>
    public string BaseFingerprint => _baseFingerprint;

    /// <summary>Completes when the last round has been aggregated.</summary>
    public Task Finished => _finished.Task;

    /// <summary>Raised (under the lock) after each round is aggregated and persisted.</summary>
    public event Action<int>? RoundCompleted;

    /// <summary>Where the job stands.</summary>
    public RoundPhase Phase { get; private set; } = RoundPhase.Enrolling;

    /// <summary>The global state after the last aggregated round.</summary>
    public GlobalState State
    {
        get { lock (_gate) return _runtime.State; }
    }

    /// <summary>The global model's held-out losses after each committed round (empty without evaluation sets).</summary>
    public IReadOnlyList<RoundMetrics> MetricsHistory
    {
        get { lock (_gate) return [.. Metrics]; }
    }

    private List<RoundMetrics> Metrics { get; } = [];

    /// <summary>Updates accepted in the open round (each kept in the state folder).</summary>
    public int AcceptedCount
    {
        get { lock (_gate) return _received.Count; }
    }

    /// <summary>The server's model (base weights); read it under <see cref="WithModel{T}"/>.</summary>
    public T WithModel<T>(Func<Gpt, int, T> read)
    {
        ArgumentNullException.ThrowIfNull(read);
        lock (_gate) return read(_runtime.Model, _runtime.BaseVersion);
    }

    /// <summary>
    /// Records client <paramref name="clientId"/>'s n_k: the operator's declared count when there is one,
    /// else the reported count if it is at most <see cref="ServerOptions.MaxExampleCount"/>. Round 0 opens
    /// once every client has enrolled; enrolling again with the same count is harmless, with another count
    /// is refused (409).
    /// </summary>
    public void Enroll(int clientId, int exampleCount)
    {
        if (exampleCount < 1) throw new UploadRejectedException(400, $"client {clientId} reports {exampleCount} examples: it needs at least one");
        var declared = _options.DeclaredExampleCounts?[clientId];
        if (declared is null && exampleCount > _options.MaxExampleCount)
        {
            throw new UploadRejectedException(400, $"client {clientId} reports {exampleCount} examples, above this server's limit of {_options.MaxExampleCount}: ask the operator to declare the count in the tokens file or raise --max-examples");
        }
        if (declared is { } operatorCount && operatorCount != exampleCount) ServerLog.DeclaredCountUsed(_log, clientId, exampleCount, operatorCount);
        var count = declared ?? exampleCount;
        lock (_gate)
        {
            if (_exampleCounts[clientId] is { } known && known != count)
            {
                throw new UploadRejectedException(409, $"client {clientId} enrolled with {known} examples and now reports {count}: its data shard must not change during a job");
            }
            var first = _exampleCounts[clientId] is null;
            _exampleCounts[clientId] = count;
            if (first) ServerLog.Enrolled(_log, clientId, count, _exampleCounts.Count(n => n is not null), _exampleCounts.Length);
            if (Phase == RoundPhase.Enrolling && _exampleCounts.All(n => n is not null)) OpenRound();
        }
    }

    /// <summary>Client <paramref name="clientId"/>'s assignment for the current round, if it is sampled and has not reported.</summary>
    public AssignmentReply AssignmentFor(int clientId)
    {
        lock (_gate)
        {
            if (Phase != RoundPhase.Collecting || Reported(clientId) || !_payloads.TryGetValue(clientId, out var payload))
            {
                return new AssignmentReply(Phase, _runtime.State.Round, null, _runtime.BaseVersion);
            }
            _runtime.RecordDownload(clientId, payload.LongLength);
            return new AssignmentReply(Phase, _runtime.State.Round, payload, _runtime.BaseVersion);
        }
    }

    /// <summary>
    /// What client <paramref name="clientId"/>, holding base version <paramref name="haveVersion"/> (-1: none), downloads to
    /// reach the current base: the base updates it missed or the whole base, whichever is smaller; counted in the open
    /// round's ledger (after the job, not counted).
    /// </summary>
    public BaseReply BaseFor(int clientId, int haveVersion)
    {
        lock (_gate)
        {
            var version = _runtime.BaseVersion;
            if (haveVersion < -1 || haveVersion > version) throw new UploadRejectedException(400, $"base version {haveVersion} does not exist: the job's base is at version {version} (ask with have=-1 for the whole base)");
            var catchUp = _runtime.CatchUp(haveVersion);
            byte[] payload;
            if (catchUp.Full)
            {
                // Serialized once per version: a whole base is large, and every client that lacks it gets the same bytes.
                if (_fullBase is not { } cached || cached.Version != version) _fullBase = cached = (version, catchUp.Payload!());
                payload = cached.Payload;
            }
            else
            {
                payload = catchUp.Payload?.Invoke() ?? BasePayload.EncodeUpdates(version, []);
            }
            if (Phase == RoundPhase.Collecting) _runtime.RecordDownload(clientId, payload.LongLength);
            return new BaseReply(version, payload, catchUp.Full);
        }
    }

    /// <summary>
    /// Reserves client <paramref name="clientId"/>'s one upload slot for <paramref name="round"/> before its body
    /// is read: refuses (409/403, like <see cref="Submit"/>) a round not collecting, a client not sampled, one that
    /// already reported or is uploading already. The slot gives the most bytes the upload may take; dispose it
    /// when the upload is over.
    /// </summary>
    public UploadSlot BeginUpload(int clientId, int round)
    {
        lock (_gate)
        {
            var assignment = CheckOpen(clientId, round);
            if (!_uploading.Add(clientId)) throw new UploadRejectedException(409, $"client {clientId} is already uploading an update for round {round}: one upload at a time");
            return new UploadSlot(this, clientId, Math.Min(_options.MaxUploadBytes, UpdateLimits.ExpectedBytes(assignment)));
        }
    }

    /// <summary>
    /// Validates and accepts client <paramref name="clientId"/>'s update for <paramref name="round"/>;
    /// closes the round if it was the last one missing. Throws <see cref="UploadRejectedException"/>
    /// (the global state untouched) when the round is not the one collecting (409), the client was
    /// not sampled (403), it already reported (409), the payload does not match its assignment (400/413),
    /// or the server cannot save (503: the update is not taken, the client should retry).
    /// </summary>
    public void Submit(int clientId, int round, ReadOnlyMemory<byte> payload)
    {
        try
        {
            Accept(clientId, round, payload, persist: true);
        }
        catch (UploadRejectedException e)
        {
            ServerLog.UpdateRefused(_log, round, clientId, e.StatusCode, e.Message);
            throw;
        }
    }

    /// <summary>Closes the round if every sampled client reported, or its deadline has passed and the quorum reported; call it periodically. A failed save is retried with backoff.</summary>
    public void Tick()
    {
        lock (_gate)
        {
            if (Phase != RoundPhase.Collecting || !ReadyToClose() || _time.GetUtcNow() < _nextCloseAttempt) return;
            try
            {
                CloseRound();
            }
            catch (UploadRejectedException)
            {
                // Logged by CloseRound; the round stays open and the next attempt waits for the backoff.
            }
        }
    }

    /// <summary>A snapshot for the operator: the whole round.</summary>
    public RoundStatus Status() => StatusFor(null);

    /// <summary>A snapshot for client <paramref name="clientId"/>: which other clients were sampled or reported is not shown.</summary>
    public RoundStatus StatusFor(int? clientId)
    {
        lock (_gate)
        {
            var sampled = _plan?.Assignments.Select(a => a.ClientId) ?? [];
            var received = _received.Keys.Order();
            if (clientId is { } id)
            {
                sampled = sampled.Where(c => c == id);
                received = received.Where(c => c == id).Order();
            }
            return new RoundStatus(Phase, _runtime.State.Round, _options.Rounds, _exampleCounts.Count(n => n is not null),
                [.. sampled], [.. received], Quorum,
                Phase == RoundPhase.Collecting ? (_deadline - _time.GetUtcNow()).TotalSeconds : 0);
        }
    }

    private int Quorum => _options.Quorum ?? _options.ClientsPerRound;

    private bool Reported(int clientId) => _received.ContainsKey(clientId) || _discarded.Contains(clientId);

    private bool ReadyToClose() =>
        _received.Count > 0 && (_received.Count + _discarded.Count == _plan!.Assignments.Count || (_time.GetUtcNow() >= _deadline && _received.Count >= Quorum));

    private void Accept(int clientId, int round, ReadOnlyMemory<byte> payload, bool persist)
    {
        ClientAssignment assignment;
        lock (_gate)
        {
            assignment = CheckOpen(clientId, round);
        }
        var decoded = UpdateValidator.Decode(assignment, payload, Math.Min(_options.MaxUploadBytes, UpdateLimits.ExpectedBytes(assignment)));
        var admitted = _runtime.Admit(assignment, decoded, payload.Length);
        lock (_gate)
        {
            CheckOpen(clientId, round);
            if (persist && _store is not null)
            {
                try
                {
                    _store.SavePending(round, clientId, payload.Span);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new UploadRejectedException(503, $"the server cannot keep client {clientId}'s update for round {round} ({e.Message}); it was not taken: retry later");
                }
            }
            _received[clientId] = admitted;
            if (admitted.Clipped) ServerLog.UpdateClipped(_log, round, clientId, admitted.Norm, admitted.Clip);
            ServerLog.UpdateAccepted(_log, round, clientId, payload.Length, admitted.Norm, admitted.Clip, _received.Count, _plan!.Assignments.Count);
            if (!persist || _received.Count + _discarded.Count != _plan.Assignments.Count) return;
            try
            {
                CloseRound();
            }
            catch (Exception e) when (e is ArgumentException or UploadRejectedException)
            {
                // The round stays open without this update (the state untouched); the client retries.
                TakeBack(clientId, round);
                if (e is UploadRejectedException) throw;
                throw new UploadRejectedException(400, $"the {_strategy.Name} strategy refused round {round} with client {clientId}'s update: {e.Message}");
            }
        }
    }

    private void TakeBack(int clientId, int round)
    {
        _received.Remove(clientId);
        _store?.ClearPending(round, clientId);
    }

    private ClientAssignment CheckOpen(int clientId, int round)
    {
        if (Phase == RoundPhase.Finished) throw new UploadRejectedException(409, $"the job is finished: round {round} no longer accepts updates");
        if (Phase == RoundPhase.Enrolling) throw new UploadRejectedException(409, $"round {round} has not opened: the server is still waiting for every client to enroll");
        if (round < _runtime.State.Round) throw new UploadRejectedException(409, $"round {round} is closed (late update refused); the current round is {_runtime.State.Round}");
        if (round > _runtime.State.Round) throw new UploadRejectedException(409, $"round {round} has not opened; the current round is {_runtime.State.Round}");
        if (!_payloads.ContainsKey(clientId)) throw new UploadRejectedException(403, $"client {clientId} was not sampled in round {round}");
        if (Reported(clientId)) throw new UploadRejectedException(409, $"client {clientId} already reported for round {round} (its update is taken)");
        return _plan!.For(clientId);
    }

    private void OpenRound()
    {
        _received.Clear();
        _discarded.Clear();
        _payloads.Clear();
        _failedSaves = 0;
        _nextCloseAttempt = DateTimeOffset.MinValue;
        if (_runtime.State.Round >= _options.Rounds)
        {
            Phase = RoundPhase.Finished;
            _plan = null;
            ServerLog.Finished(_log, _options.Rounds);
            _finished.TrySetResult();
            return;
        }
        _plan = _runtime.Configure([.. _budgets.Select((budget, id) => new SampledClient(id, _exampleCounts[id]!.Value, budget))]);
        foreach (var assignment in _plan.Assignments) _payloads[assignment.ClientId] = AssignmentCodec.Encode(assignment);
        _deadline = _time.GetUtcNow() + _options.RoundDeadline;
        Phase = RoundPhase.Collecting;
        ServerLog.RoundOpened(_log, _runtime.State.Round, _plan.Assignments.Count, _deadline);
        if (_resumePending) ResumePending();
    }

    /// <summary>Takes back the updates accepted before a stop or crash (kept in the state folder), checked again as if just uploaded.</summary>
    private void ResumePending()
    {
        _resumePending = false;
        var round = _runtime.State.Round;
        foreach (var (clientId, payload) in _store!.LoadPending(round))
        {
            try
            {
                Accept(clientId, round, payload, persist: false);
            }
            catch (UploadRejectedException e)
            {
                ServerLog.PendingDropped(_log, clientId, round, e.Message);
                _store.ClearPending(round, clientId);
            }
        }
        ServerLog.Resumed(_log, round, _options.Rounds, _store.Directory, _received.Count);
    }

    /// <summary>
    /// Aggregates (the runtime's check sets aside any update that makes the aggregate non-finite or explode), saves,
    /// and only then commits the round and evaluates the global model. A failed save leaves every in-memory field as
    /// it was and throws a 503 <see cref="UploadRejectedException"/>; the next attempt waits for an exponential backoff.
    /// </summary>
    private void CloseRound()
    {
        var plan = _plan!;
        RoundClose close;
        try
        {
            close = _runtime.Close(plan, [.. _received.Values]);
        }
        catch (InvalidOperationException)
        {
            throw new UploadRejectedException(503, $"every update of round {plan.Round} was discarded: the round stays open for the others");
        }
        foreach (var (offender, problem) in close.Discarded)
        {
            ServerLog.AggregateRejected(_log, plan.Round, problem, offender, _received[offender].Norm);
            _received.Remove(offender);
            _discarded.Add(offender);
        }
        var baseVersion = _runtime.BaseVersion + (close.BaseUpdate is null ? 0 : 1);
        var progress = _progress;
        if (_store is not null)
        {
            try
            {
                progress = _store.Save(_progress, close.State, close.BaseUpdate, _strategy.Name, _options.Seed, baseVersion, _baseFingerprint,
                    _exampleCounts.Select(n => n!.Value).ToArray(), [.. Ledger.Entries, .. close.Ledger]);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or SqliteException)
            {
                _failedSaves++;
                var retry = TimeSpan.FromSeconds(Math.Min(MaxRetryDelay.TotalSeconds, Math.Pow(2, _failedSaves - 1)));
                _nextCloseAttempt = _time.GetUtcNow() + retry;
                ServerLog.SaveFailed(_log, e, plan.Round, _failedSaves, retry.TotalSeconds);
                throw new UploadRejectedException(503, $"the server could not save round {plan.Round} ({e.Message}); the round stays open: retry later");
            }
        }
        _runtime.Commit(close);
        _progress = progress;
        _store?.ClearPendingBefore(close.State.Round);
        ServerLog.RoundClosed(_log, plan.Round, close.Used.Count);
        EvaluateRound(plan.Round, close);
        RoundCompleted?.Invoke(plan.Round);
        OpenRound();
    }

    /// <summary>The committed round's metrics: the global model's held-out losses (when the server holds a test set) and its bytes; kept in the state folder.</summary>
    private void EvaluateRound(int round, RoundClose close)
    {
        var task = _evaluation?.TaskMetrics is { } measure ? _runtime.Measure(model => measure(model, round)) : null;
        var metrics = new RoundMetrics(round, _runtime.Evaluate(), close.Used.Count, close.Ledger.Sum(e => e.DownloadBytes), close.Ledger.Sum(e => e.UploadBytes), task)
        {
            Epsilon = close.Privacy is { Epsilon: var epsilon } && double.IsFinite(epsilon) ? epsilon : null,
            DpClip = close.Privacy?.NextClip,
        };
        Metrics.Add(metrics);
        try
        {
            _store?.SaveMetrics(metrics);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SqliteException)
        {
            // The round is committed; only its metrics row is missing from the state folder (it stays in memory and on /v1/metrics).
            ServerLog.SaveFailed(_log, e, round, 1, 0);
        }
    }

    internal void EndUpload(int clientId)
    {
        lock (_gate) _uploading.Remove(clientId);
    }

    /// <summary>Whether client <paramref name="clientId"/> holds its upload slot (<see cref="BeginUpload"/>) now.</summary>
    internal bool IsUploading(int clientId)
    {
        lock (_gate) return _uploading.Contains(clientId);
    }
}

/// <summary>A client's one upload in flight (see <see cref="RoundCoordinator.BeginUpload"/>); dispose it when the upload is over.</summary>
public sealed class UploadSlot : IDisposable
{
    private readonly RoundCoordinator _owner;
    private readonly int _clientId;
    private bool _disposed;

    internal UploadSlot(RoundCoordinator owner, int clientId, long maxBytes)
    {
        _owner = owner;
        _clientId = clientId;
        MaxBytes = maxBytes;
    }

    /// <summary>The most bytes this upload may take: its assignment's tensors plus a header allowance, at most <see cref="ServerOptions.MaxUploadBytes"/>.</summary>
    public long MaxBytes { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _owner.EndUpload(_clientId);
    }
}
