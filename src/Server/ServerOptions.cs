using FedLora.Federation;
using FedLora.Federation.Privacy;
using FedLora.Model;
using FedLora.Model.Training;
using FedLora.Runtime;

namespace FedLora.Server;

/// <summary>What a joining client must know to train exactly as the simulation would: sent as JSON at enrollment.</summary>
/// <param name="Strategy">The strategy's name.</param>
/// <param name="Rounds">Rounds of the job.</param>
/// <param name="Seed">The job's seed (clients draw their batches from BatchSeed(seed, round, id)).</param>
/// <param name="Model">The GPT's shape.</param>
/// <param name="Batch">Examples per local step.</param>
/// <param name="Time">Tokens per example window.</param>
/// <param name="Local">Each client's local training.</param>
/// <param name="BaseFingerprint">SHA-256 of the job's initial base weights: a client that holds them needs no base download to start.</param>
public sealed record JobDescription(string Strategy, int Rounds, int Seed, GptConfig Model, int Batch, int Time, TrainingOptions Local, string BaseFingerprint);

/// <summary>How the server combines a round's updates.</summary>
public enum AggregationRule
{
    /// <summary>The method's own aggregation (weighted by example counts).</summary>
    Strategy,

    /// <summary>Coordinate-wise median of the clients' factors (FedIT and FFA-LoRA only), unweighted.</summary>
    Median,

    /// <summary>Coordinate-wise mean after dropping the <see cref="ServerOptions.TrimFraction"/> largest and smallest values (FedIT and FFA-LoRA only), unweighted.</summary>
    TrimmedMean,
}

/// <summary>
/// The server's connection, request and timing limits, in one place. Defaults suit a job of a few
/// hundred clients spread over the internet; a load test from one address raises the per-address ones.
/// </summary>
public sealed record ServerLimits
{
    /// <summary>Open TCP connections in total; beyond it Kestrel refuses new ones (and logs it).</summary>
    public int MaxConnections { get; init; } = 2048;

    /// <summary>Open TCP connections from one IP address; beyond it new ones are closed at once (and logged).</summary>
    public int MaxConnectionsPerAddress { get; init; } = 64;

    /// <summary>Requests per second from one IP address (token bucket, bursts up to ten times as many); beyond it 429.</summary>
    public int RequestsPerSecondPerAddress { get; init; } = 200;

    /// <summary>Requests per second of one client token (token bucket, bursts up to ten times as many); beyond it 429.</summary>
    public int RequestsPerSecondPerClient { get; init; } = 20;

    /// <summary>How long an idle connection stays open (also a connection that has sent nothing yet).</summary>
    public TimeSpan KeepAliveTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Time to receive a request's headers.</summary>
    public TimeSpan RequestHeadersTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The slowest body upload accepted after a 5 s grace period, in bytes per second.</summary>
    public double MinRequestBodyBytesPerSecond { get; init; } = 1024;

    /// <summary>Throws with a message naming the bad limit.</summary>
    public void Validate()
    {
        if (MaxConnections < 1) throw new ArgumentException($"MaxConnections is {MaxConnections}: it must be >= 1");
        if (MaxConnectionsPerAddress < 1) throw new ArgumentException($"MaxConnectionsPerAddress is {MaxConnectionsPerAddress}: it must be >= 1");
        if (RequestsPerSecondPerAddress < 1) throw new ArgumentException($"RequestsPerSecondPerAddress is {RequestsPerSecondPerAddress}: it must be >= 1");
        if (RequestsPerSecondPerClient < 1) throw new ArgumentException($"RequestsPerSecondPerClient is {RequestsPerSecondPerClient}: it must be >= 1");
        if (KeepAliveTimeout <= TimeSpan.Zero || RequestHeadersTimeout <= TimeSpan.Zero) throw new ArgumentException("the keep-alive and header timeouts must be positive");
        if (!(MinRequestBodyBytesPerSecond > 0)) throw new ArgumentException($"MinRequestBodyBytesPerSecond is {MinRequestBodyBytesPerSecond}: it must be positive");
    }
}

/// <summary>How the server runs one job.</summary>
/// <param name="Rounds">Rounds to run.</param>
/// <param name="ClientsPerRound">M, the clients sampled each round.</param>
/// <param name="Seed">Seeds sampling and the strategy's draws, as in the simulation.</param>
/// <param name="Batch">Examples per local step (told to clients).</param>
/// <param name="Time">Tokens per example window (told to clients).</param>
/// <param name="Local">Local training (told to clients).</param>
public sealed record ServerOptions(int Rounds, int ClientsPerRound, int Seed, int Batch, int Time, TrainingOptions Local)
{
    /// <summary>Updates needed to close a round at its deadline (null: every sampled client).</summary>
    public int? Quorum { get; init; }

    /// <summary>How long a round collects before it may close with the quorum.</summary>
    public TimeSpan RoundDeadline { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// The largest upload accepted, in bytes, whatever the assignment. Each upload is also limited to the
    /// size its assignment's tensors take plus a small header allowance (<see cref="UpdateLimits.ExpectedBytes"/>).
    /// </summary>
    public long MaxUploadBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>Where the state is persisted after every round, and accepted updates as they arrive (null: not persisted).</summary>
    public string? StateDirectory { get; init; }

    /// <summary>
    /// Each update's change from the start it was sent (L2 norm over all its factors) is clipped to
    /// <c>UpdateNormFactor * lr * steps * sqrt(n)</c>, n the number of values it trains: 10/3.2 times the
    /// most an AdamW client can move them (Kingma and Ba's bound of 3.2 lr per value and step at beta1 = 0.9,
    /// beta2 = 0.999), so an honest update is never clipped. 0 turns the clip off.
    /// </summary>
    public double UpdateNormFactor { get; init; } = 10;

    /// <summary>An absolute clip of each update's change (L2 norm), used instead of <see cref="UpdateNormFactor"/> when set.</summary>
    public double? MaxUpdateNorm { get; init; }

    /// <summary>The largest example count a client may report when the operator has not declared it.</summary>
    public int MaxExampleCount { get; init; } = 100_000;

    /// <summary>Per client, the example count the operator declared (the tokens file's third column); null entries are self-reported.</summary>
    public IReadOnlyList<int?>? DeclaredExampleCounts { get; init; }

    /// <summary>How the round's updates are combined.</summary>
    public AggregationRule Aggregation { get; init; } = AggregationRule.Strategy;

    /// <summary>The fraction of values dropped at each end by <see cref="AggregationRule.TrimmedMean"/>.</summary>
    public double TrimFraction { get; init; } = 0.1;

    /// <summary>Connection, rate and timing limits.</summary>
    public ServerLimits Limits { get; init; } = new();

    /// <summary>Whether log lines also go to the console (they always go to server.log in the state folder).</summary>
    public bool ConsoleLog { get; init; }

    /// <summary>
    /// Client-level differential privacy (resolved for the job's clients, M and rounds): each round's sum is
    /// clipped and noised with noise from the operating system's cryptographic generator; null: off.
    /// </summary>
    public DpSettings? Privacy { get; init; }

    /// <summary>The clip of <paramref name="assignment"/>'s update (see <see cref="UpdateNormFactor"/>); +infinity when off.</summary>
    public double ClipOf(ClientAssignment assignment)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        if (MaxUpdateNorm is { } absolute) return absolute;
        if (UpdateNormFactor == 0) return double.PositiveInfinity;
        var (trained, startNorm) = UpdateGuard.TrainedValues(assignment);
        return UpdateNormFactor * Local.LearningRate * Local.Steps * (Math.Sqrt(trained) + Local.WeightDecay * startNorm);
    }

    /// <summary>Throws with a message naming the bad option.</summary>
    public void Validate(int clientCount)
    {
        new SimulationOptions(Rounds, ClientsPerRound, Local, Seed).Validate(clientCount);
        if (Batch < 1) throw new ArgumentException($"Batch is {Batch}: it must be >= 1");
        if (Time < 1) throw new ArgumentException($"Time is {Time}: it must be >= 1");
        if (Quorum is { } quorum && (quorum < 1 || quorum > ClientsPerRound))
        {
            throw new ArgumentException($"Quorum is {quorum}: it must be in [1, {ClientsPerRound}] (the clients sampled per round)");
        }
        if (RoundDeadline <= TimeSpan.Zero) throw new ArgumentException($"RoundDeadline is {RoundDeadline}: it must be positive");
        if (MaxUploadBytes < 1) throw new ArgumentException($"MaxUploadBytes is {MaxUploadBytes}: it must be positive");
        if (!(UpdateNormFactor >= 0) || !double.IsFinite(UpdateNormFactor)) throw new ArgumentException($"UpdateNormFactor is {UpdateNormFactor}: it must be finite and >= 0 (0: no clip)");
        if (MaxUpdateNorm is { } norm && (!(norm > 0) || !double.IsFinite(norm))) throw new ArgumentException($"MaxUpdateNorm is {norm}: it must be finite and > 0");
        if (MaxExampleCount < 1) throw new ArgumentException($"MaxExampleCount is {MaxExampleCount}: it must be >= 1");
        if (Privacy is { } privacy)
        {
            privacy.Resolve(clientCount, ClientsPerRound, Rounds);
            if (Aggregation != AggregationRule.Strategy) throw new ArgumentException($"differential privacy noises the strategy's sum; {Aggregation} aggregation is not a sum: use one or the other");
        }
        if (DeclaredExampleCounts is { } declared)
        {
            if (declared.Count != clientCount) throw new ArgumentException($"{declared.Count} declared example counts for {clientCount} clients: give one per client (or none)");
            if (declared.Any(n => n is < 1)) throw new ArgumentException("every declared example count must be >= 1");
        }
        if (!(TrimFraction is >= 0 and < 0.5)) throw new ArgumentException($"TrimFraction is {TrimFraction}: it must be in [0, 0.5)");
        Limits.Validate();
    }
}
