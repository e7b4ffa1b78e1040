using FedLora.Model;
using FedLora.Model.Training;

namespace FedLora.Federation.Networking;

/// <summary>What a joining client must know to train exactly as the simulation would: sent as JSON at enrollment.</summary>
/// <param name="Strategy">The strategy's name.</param>
/// <param name="Rounds">Rounds of the job.</param>
/// <param name="Seed">The job's seed (clients draw their batches from BatchSeed(seed, round, id)).</param>
/// <param name="Model">The GPT's shape.</param>
/// <param name="Batch">Examples per local step.</param>
/// <param name="Time">Tokens per example window.</param>
/// <param name="Local">Each client's local training.</param>
public sealed record JobDescription(string Strategy, int Rounds, int Seed, GptConfig Model, int Batch, int Time, TrainingOptions Local);

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

    /// <summary>The largest upload accepted, in bytes.</summary>
    public long MaxUploadBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>Where the state is persisted after every round (null: not persisted).</summary>
    public string? StateDirectory { get; init; }

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
    }
}
