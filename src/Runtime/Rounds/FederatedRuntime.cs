using FedLora.Federation;
using FedLora.Federation.Privacy;
using FedLora.Model;

namespace FedLora.Runtime;

/// <summary>How a round loop runs, whoever drives it.</summary>
/// <param name="Seed">Seeds the global initialisation, every round's sampling and strategy draws, and the clients' batches.</param>
/// <param name="ClientsPerRound">M, the clients sampled each round (without replacement).</param>
/// <param name="Evaluation">Held-out sets the global model is evaluated on after each round (none: no evaluation).</param>
public sealed record RuntimeOptions(int Seed, int ClientsPerRound, IReadOnlyList<EvaluationSet> Evaluation)
{
    /// <summary>The clip of each update's change (L2 norm) given its assignment; null: no clip.</summary>
    public Func<ClientAssignment, double>? Clip { get; init; }

    /// <summary>Replaces the strategy's aggregation (the server's robust median or trimmed mean); null: the strategy's own.</summary>
    public Func<RoundPlan, GlobalState, IReadOnlyList<ClientUpdate>, AggregationResult>? Aggregate { get; init; }

    /// <summary>
    /// Client-level differential privacy: every round aggregates through the strategy's
    /// <see cref="IPrivateAggregation"/> (each contribution clipped to S, the sum noised, the fixed denominator M);
    /// null: off, and the run is exactly as without this option.
    /// </summary>
    public DpMechanism? Privacy { get; init; }

    /// <summary>
    /// Draw the DP noise from a cryptographically secure generator rather than from the job's seed: the server's
    /// choice, since its clients know the seed and could subtract seeded noise. False: reproducible noise
    /// (<see cref="RoundSchedule.PrivacyRandom"/>), for simulations.
    /// </summary>
    public bool SecretNoise { get; init; }
}

/// <summary>What a private round spent and how it clipped.</summary>
/// <param name="Epsilon">The epsilon spent by the job after this round (at <paramref name="Delta"/>; infinite when z = 0).</param>
/// <param name="Delta">delta.</param>
/// <param name="Clip">The clip S the round's contributions were held to.</param>
/// <param name="NextClip">The clip of the next round (adaptive clipping; else <paramref name="Clip"/>).</param>
/// <param name="NoiseMultiplier">z of the noise on the update sum (z_delta under adaptive clipping).</param>
/// <param name="Clipped">How many contributions the clip scaled down.</param>
/// <param name="Reported">How many contributions the sum holds.</param>
public sealed record RoundPrivacy(double Epsilon, double Delta, double Clip, double NextClip, double NoiseMultiplier, int Clipped, int Reported);

/// <summary>A client's update as the runtime took it: clipped to <see cref="Clip"/>, with the norm of its change as uploaded.</summary>
/// <param name="Update">The update (its change scaled down when <see cref="Norm"/> exceeded <see cref="Clip"/>).</param>
/// <param name="Norm">The L2 norm of the uploaded change (<see cref="UpdateGuard.ChangeNorm"/>).</param>
/// <param name="Clip">The clip it was held to (+infinity: none).</param>
/// <param name="PayloadBytes">The bytes of its upload, as sent.</param>
public sealed record AdmittedUpdate(ClientUpdate Update, double Norm, double Clip, long PayloadBytes)
{
    /// <summary>Whether the clip changed it.</summary>
    public bool Clipped => Norm > Clip;
}

/// <summary>A round aggregated but not yet committed: what <see cref="FederatedRuntime.Commit"/> will make the job's state.</summary>
/// <param name="Plan">The round's plan.</param>
/// <param name="State">The next global state.</param>
/// <param name="BaseUpdate">FLoRA's update to merge into the base weights (its version is the runtime's next); null otherwise.</param>
/// <param name="Used">The clients whose updates were aggregated, in plan order.</param>
/// <param name="Discarded">The clients whose updates were set aside because the aggregate with them was non-finite or exploding, with the reason.</param>
/// <param name="Ledger">Every client's bytes this round, by id.</param>
public sealed record RoundClose(RoundPlan Plan, GlobalState State, IReadOnlyList<StackedUpdate>? BaseUpdate, IReadOnlyList<int> Used,
    IReadOnlyList<(int ClientId, string Reason)> Discarded, IReadOnlyList<LedgerEntry> Ledger)
{
    /// <summary>Under DP, what the round spent and the clip it leaves for the next; null otherwise.</summary>
    public RoundPrivacy? Privacy { get; init; }
}

/// <summary>
/// The round loop of a federated job, driven the same way by the in-process <see cref="FederatedSimulation"/>
/// and by the networked server: <see cref="Configure"/> samples the round's clients and lets the strategy
/// assign them work; the driver delivers the assignments (recording what it sent with
/// <see cref="RecordDownload"/> and, for FLoRA, <see cref="CatchUp"/>), has them trained, and passes each update
/// through <see cref="Admit"/> (the clip); <see cref="Close"/> aggregates in plan order, checks the aggregate
/// and computes the round's ledger without changing anything; <see cref="Commit"/> then makes it the job's
/// state (merging FLoRA's update into the base weights) and evaluates the global model. A driver that must
/// persist the round (the server) saves between Close and Commit, so a failed save changes nothing.
/// </summary>
/// <remarks>Not thread-safe: the server calls it under its own lock.</remarks>
public sealed class FederatedRuntime
{
    private readonly IFederatedStrategy _strategy;
    private readonly Gpt _model;
    private readonly RuntimeOptions _options;
    private readonly List<IReadOnlyList<StackedUpdate>> _baseUpdates = [];
    private readonly Dictionary<int, long> _downloads = [];

    /// <summary>A job of <paramref name="strategy"/> on <paramref name="model"/> (whose base weights FLoRA's merges change), from the strategy's initial state.</summary>
    /// <exception cref="NotSupportedException">DP is asked of a strategy that cannot aggregate privately (FLoRA).</exception>
    /// <exception cref="ArgumentException">The DP mechanism was resolved for another sampling scheme or another M, or is combined with a robust aggregation.</exception>
    public FederatedRuntime(IFederatedStrategy strategy, Gpt model, RuntimeOptions options)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Evaluation);
        if (options.ClientsPerRound < 1) throw new ArgumentException($"ClientsPerRound is {options.ClientsPerRound}: a round needs at least one client");
        if (options.Privacy is { } privacy)
        {
            PrivateAggregation.RequireSupport(strategy);
            if (privacy.Settings.Sampling != ClientSampling.WithoutReplacement)
            {
                throw new ArgumentException($"the DP mechanism is accounted for {privacy.Settings.Sampling} sampling, but the round loop draws {options.ClientsPerRound} clients "
                    + "without replacement: its epsilon would not hold. Resolve the mechanism with Sampling = ClientSampling.WithoutReplacement");
            }
            if (options.Aggregate is not null) throw new ArgumentException("differential privacy noises the strategy's sum; a robust aggregation (median, trimmed mean) is not a sum: use one or the other");
            if (privacy.ClientsPerRound != options.ClientsPerRound)
            {
                throw new ArgumentException($"the DP mechanism was resolved for {privacy.ClientsPerRound} clients a round, the job samples {options.ClientsPerRound}: resolve it for the job's");
            }
            PrivacyClip = privacy.Settings.Clip;
        }
        _strategy = strategy;
        _model = model;
        _options = options;
        State = strategy.Initialize(new Random(options.Seed));
    }

    /// <summary>The strategy.</summary>
    public IFederatedStrategy Strategy => _strategy;

    /// <summary>The global model's base weights (FLoRA's merged updates included).</summary>
    public Gpt Model => _model;

    /// <summary>The global state after the last committed round.</summary>
    public GlobalState State { get; private set; }

    /// <summary>How many base updates (FLoRA's merges) the base weights hold: 0 for the initial base.</summary>
    public int BaseVersion => _baseUpdates.Count;

    /// <summary>Base update v+1 (the one that brings the base from version v to v+1) at index v.</summary>
    public IReadOnlyList<IReadOnlyList<StackedUpdate>> BaseUpdates => _baseUpdates;

    /// <summary>Bytes sent to and received from each client, per committed round.</summary>
    public CommunicationLedger Ledger { get; } = new();

    /// <summary>Under DP, the clip S of the next round (it moves under adaptive clipping: a driver that persists the job keeps it); null otherwise.</summary>
    public double? PrivacyClip { get; private set; }

    /// <summary>Under DP, the epsilon the committed rounds spent; null otherwise.</summary>
    public double? Epsilon => _options.Privacy?.EpsilonAfter(State.Round);

    /// <summary>
    /// Resumes a job from saved progress: its state, the base updates it committed (merged into the base
    /// weights here, in order, unless <paramref name="mergeIntoBase"/> is false because the weights already hold
    /// them), its ledger and, under adaptive DP clipping, the clip it had reached.
    /// </summary>
    public void Restore(GlobalState state, IReadOnlyList<IReadOnlyList<StackedUpdate>> baseUpdates, IEnumerable<LedgerEntry> ledger, bool mergeIntoBase = true,
        double? privacyClip = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(baseUpdates);
        ArgumentNullException.ThrowIfNull(ledger);
        if (State.Round != 0 || BaseVersion != 0 || Ledger.Entries.Count != 0) throw new InvalidOperationException("a runtime is restored once, before its first round");
        foreach (var update in baseUpdates)
        {
            if (mergeIntoBase) GlobalModel.MergeIntoBase(_model, update);
            _baseUpdates.Add(update);
        }
        foreach (var entry in ledger) Ledger.Record(entry.Round, entry.ClientId, entry.DownloadBytes, entry.UploadBytes);
        if (privacyClip is { } clip && PrivacyClip is not null)
        {
            if (!double.IsFinite(clip) || clip <= 0) throw new ArgumentOutOfRangeException(nameof(privacyClip), clip, "a saved DP clip must be finite and > 0");
            PrivacyClip = clip;
        }
        State = state;
    }

    /// <summary>
    /// Opens round <c>State.Round</c>: samples M of <paramref name="population"/> (every client, ids 0..N-1 in
    /// order) with the round's random source and lets the strategy assign them work. Forgets any bytes recorded
    /// for a round that was configured and never committed.
    /// </summary>
    public RoundPlan Configure(IReadOnlyList<SampledClient> population)
    {
        ArgumentNullException.ThrowIfNull(population);
        for (var i = 0; i < population.Count; i++)
        {
            if (population[i].Id != i) throw new ArgumentException($"client ids must be 0..{population.Count - 1} in order; position {i} holds id {population[i].Id}", nameof(population));
        }
        if (_options.ClientsPerRound > population.Count)
        {
            throw new ArgumentException($"ClientsPerRound is {_options.ClientsPerRound}: it must be at most {population.Count} (the number of clients)", nameof(population));
        }
        _downloads.Clear();
        var round = State.Round;
        var random = RoundSchedule.RoundRandom(_options.Seed, round);
        var sampled = RoundSchedule.Sample(random, population, _options.ClientsPerRound);
        return _strategy.ConfigureRound(round, State, sampled, random);
    }

    /// <summary>Counts <paramref name="bytes"/> sent to client <paramref name="clientId"/> in the open round (an assignment, a base download).</summary>
    public void RecordDownload(int clientId, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        _downloads[clientId] = _downloads.GetValueOrDefault(clientId) + bytes;
    }

    /// <summary>
    /// What a client holding base version <paramref name="haveVersion"/> (-1: none that matches the job's)
    /// downloads to reach <see cref="BaseVersion"/>: nothing when it is current, else the base updates it missed
    /// or the whole base, whichever is smaller. Not recorded: the driver records what it sends.
    /// </summary>
    public BaseCatchUp CatchUp(int haveVersion)
    {
        if (haveVersion > BaseVersion) throw new ArgumentOutOfRangeException(nameof(haveVersion), haveVersion, $"the base is at version {BaseVersion}");
        if (haveVersion == BaseVersion) return new BaseCatchUp(haveVersion, BaseVersion, false, 0, null);
        var full = BasePayload.FullLength(_model, BaseVersion);
        if (haveVersion >= 0)
        {
            var updates = BasePayload.EncodeUpdates(haveVersion, [.. _baseUpdates.Skip(haveVersion)]);
            if (updates.LongLength < full) return new BaseCatchUp(haveVersion, BaseVersion, false, updates.LongLength, () => updates);
        }
        return new BaseCatchUp(haveVersion, BaseVersion, true, full, () => BasePayload.EncodeFull(_model, BaseVersion));
    }

    /// <summary>
    /// Takes <paramref name="update"/> of <paramref name="assignment"/>'s client, <paramref name="payloadBytes"/> as
    /// uploaded: its change from the assignment's start is clipped to <see cref="RuntimeOptions.Clip"/>.
    /// </summary>
    public AdmittedUpdate Admit(ClientAssignment assignment, ClientUpdate update, long payloadBytes)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        ArgumentNullException.ThrowIfNull(update);
        var norm = UpdateGuard.ChangeNorm(assignment, update);
        var clip = _options.Clip?.Invoke(assignment) ?? double.PositiveInfinity;
        return new AdmittedUpdate(UpdateGuard.Clip(assignment, update, norm, clip), norm, clip, payloadBytes);
    }

    /// <summary>
    /// Aggregates round <paramref name="plan"/> from <paramref name="updates"/> (any order; combined in plan order),
    /// without changing anything. While the aggregate is non-finite or exploding (<see cref="UpdateGuard.CheckAggregate"/>),
    /// the update with the largest change is set aside and the round aggregated again. Throws
    /// <see cref="InvalidOperationException"/> when no update is left, and the strategy's
    /// <see cref="ArgumentException"/> when it refuses an update.
    /// </summary>
    public RoundClose Close(RoundPlan plan, IReadOnlyList<AdmittedUpdate> updates)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(updates);
        if (plan.Round != State.Round) throw new ArgumentException($"the plan is for round {plan.Round}, the open round is {State.Round}", nameof(plan));
        var byClient = updates.ToDictionary(u => u.Update.ClientId);
        var used = plan.Assignments.Where(a => byClient.ContainsKey(a.ClientId)).Select(a => byClient[a.ClientId]).ToList();
        if (_options.Privacy is { } privacy) return ClosePrivately(plan, used, updates, privacy);
        var discarded = new List<(int, string)>();
        while (true)
        {
            if (used.Count == 0) throw new InvalidOperationException($"no update of round {plan.Round} is left to aggregate");
            var clientUpdates = used.Select(u => u.Update).ToList();
            var aggregation = _options.Aggregate?.Invoke(plan, State, clientUpdates) ?? _strategy.Aggregate(plan, State, clientUpdates);
            var clip = used.Max(u => u.Clip);
            if (UpdateGuard.CheckAggregate(State, aggregation.State, aggregation.BaseUpdate, clip) is not { } problem)
            {
                return new RoundClose(plan, aggregation.State, aggregation.BaseUpdate, [.. used.Select(u => u.Update.ClientId)], discarded,
                    LedgerOf(plan.Round, updates));
            }
            var offender = used.MaxBy(u => u.Norm)!;
            discarded.Add((offender.Update.ClientId, problem));
            used.Remove(offender);
        }
    }

    /// <summary>
    /// The private close: one release of the strategy's noised sum over every update received, then the next clip
    /// (adaptive clipping) from the norms that sum saw. No update is set aside and aggregated again: each client
    /// already moves the aggregate by at most S / M, which is what the explosion check guards, and a second
    /// aggregate of the same round would be a second, unaccounted release. Only a non-finite aggregate is refused.
    /// </summary>
    private RoundClose ClosePrivately(RoundPlan plan, List<AdmittedUpdate> used, IReadOnlyList<AdmittedUpdate> updates, DpMechanism privacy)
    {
        if (used.Count == 0) throw new InvalidOperationException($"no update of round {plan.Round} is left to aggregate");
        var random = _options.SecretNoise ? new SecureRandom() : RoundSchedule.PrivacyRandom(_options.Seed, plan.Round);
        var clip = PrivacyClip!.Value;
        var sum = privacy.SumFor(clip, random);
        var aggregation = PrivateAggregation.Aggregate(_strategy, plan, State, [.. used.Select(u => u.Update)], sum);
        if (UpdateGuard.CheckAggregate(State, aggregation.State, aggregation.BaseUpdate, double.MaxValue) is { } problem)
        {
            throw new InvalidOperationException($"round {plan.Round}'s private aggregate is not finite: {problem}");
        }
        var next = clip;
        if (privacy.Settings.Adaptive is { } adaptive)
        {
            var stepped = new AdaptiveClip(adaptive, privacy.CountNoise, privacy.ClientsPerRound, clip);
            stepped.Step(sum.Norms, random);
            next = stepped.Clip;
        }
        var spent = new RoundPrivacy(privacy.EpsilonAfter(plan.Round + 1), privacy.Delta, clip, next, privacy.UpdateNoiseMultiplier,
            sum.Norms.Count(norm => norm > clip), sum.Norms.Count);
        return new RoundClose(plan, aggregation.State, aggregation.BaseUpdate, [.. used.Select(u => u.Update.ClientId)], [], LedgerOf(plan.Round, updates))
        {
            Privacy = spent,
        };
    }

    /// <summary>Makes <paramref name="close"/> the job's state: merges its base update (a new base version), records its ledger.</summary>
    public void Commit(RoundClose close)
    {
        ArgumentNullException.ThrowIfNull(close);
        if (close.Plan.Round != State.Round) throw new InvalidOperationException($"round {close.Plan.Round} cannot be committed: the open round is {State.Round}");
        if (close.BaseUpdate is { } baseUpdate)
        {
            GlobalModel.MergeIntoBase(_model, baseUpdate);
            _baseUpdates.Add(baseUpdate);
        }
        foreach (var entry in close.Ledger) Ledger.Record(entry.Round, entry.ClientId, entry.DownloadBytes, entry.UploadBytes);
        if (close.Privacy is { } privacy) PrivacyClip = privacy.NextClip;
        _downloads.Clear();
        State = close.State;
    }

    /// <summary>Mean loss per target token of the global model (base plus the state's adapters) on each evaluation set, by name.</summary>
    public IReadOnlyDictionary<string, double> Evaluate() => GlobalModel.Evaluate(_model, State, _options.Evaluation);

    /// <summary>Runs <paramref name="measure"/> on the global model (base plus the state's adapters, attached for the call): task metrics, generation.</summary>
    public T Measure<T>(Func<Gpt, T> measure)
    {
        ArgumentNullException.ThrowIfNull(measure);
        using var adapters = GlobalModel.Adapters(_model, State);
        _model.Attach(adapters);
        try
        {
            return measure(_model);
        }
        finally
        {
            _model.Attach(null);
        }
    }

    private List<LedgerEntry> LedgerOf(int round, IReadOnlyList<AdmittedUpdate> updates)
    {
        var up = updates.ToDictionary(u => u.Update.ClientId, u => u.PayloadBytes);
        return [.. _downloads.Keys.Union(up.Keys).Order()
            .Select(id => new LedgerEntry(round, id, _downloads.GetValueOrDefault(id), up.GetValueOrDefault(id)))
            .Where(e => e.DownloadBytes > 0 || e.UploadBytes > 0)];
    }
}

/// <summary>What a client downloads to bring its base weights to the job's version.</summary>
/// <param name="From">The version it holds (-1: none).</param>
/// <param name="To">The job's version.</param>
/// <param name="Full">Whether it is the whole base (else the base updates it missed).</param>
/// <param name="Length">The payload's size in bytes (0: nothing to download).</param>
/// <param name="Payload">Builds the payload; null when there is nothing to download.</param>
public sealed record BaseCatchUp(int From, int To, bool Full, long Length, Func<byte[]>? Payload);
