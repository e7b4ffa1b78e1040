using System.Globalization;
using System.Text.Json;
using FedLora.Federation;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using FedLora.Runtime;
using Microsoft.Data.Sqlite;

namespace FedLora.Server;

/// <summary>What the server keeps on disk after a round; <see cref="Round"/> rounds are complete.</summary>
/// <param name="Round">Rounds aggregated so far (the next round to open).</param>
/// <param name="Strategy">The strategy's name, checked on resume.</param>
/// <param name="Seed">The job's seed, checked on resume.</param>
/// <param name="BaseVersion">How many base updates (FLoRA's merges) the base weights hold; update v is kept in <see cref="StateStore.BaseUpdateName"/>(v).</param>
/// <param name="StateFile">The global state's safetensors file, relative to the state folder.</param>
/// <param name="BaseFingerprint">SHA-256 of the job's initial base weights, checked on resume.</param>
/// <param name="ExampleCounts">Every client's n_k as it enrolled.</param>
/// <param name="Ledger">Every ledger entry so far.</param>
/// <param name="Metrics">The metrics of every committed round measured so far.</param>
public sealed record ServerProgress(int Round, string Strategy, int Seed, int BaseVersion, string StateFile, string BaseFingerprint,
    int[] ExampleCounts, LedgerEntry[] Ledger, RoundMetrics[] Metrics);

/// <summary>The state folder cannot be used (not writable, not a folder, a broken database): the message says which and why.</summary>
public sealed class StateFolderException : IOException
{
    /// <summary>Creates the exception.</summary>
    public StateFolderException(string message, Exception innerException) : base(message, innerException) { }

    /// <summary>Creates the exception.</summary>
    public StateFolderException(string message) : base(message) { }

    /// <summary>Creates the exception.</summary>
    public StateFolderException() { }
}

/// <summary>
/// The server's state folder (owner-only on Unix). Each save writes the round's tensor files under new
/// names (global state as safetensors, FLoRA's base update when it made one: the base is the initial weights
/// plus these updates, replayed on resume), then commits in one SQLite transaction of job.db (the progress row
/// and the round's ledger entries), then deletes the files no longer referenced; each round's metrics follow
/// in a row of their own: a crash at any point leaves the last committed round intact. Every accepted update
/// of the open round is kept in pending/ as it arrives (written to a temporary file, flushed, renamed), so
/// that a restart resumes the round with it.
/// </summary>
public sealed class StateStore
{
    /// <summary>The SQLite database holding the progress row and the ledger.</summary>
    public const string DatabaseFile = "job.db";

    /// <summary>The subfolder of accepted updates of the open round.</summary>
    public const string PendingFolder = "pending";
    private const string Key = "fedlora.";
    private const UnixFileMode OwnerOnlyFolder = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode OwnerOnlyFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private readonly string _directory;

    /// <summary>Uses (and creates, owner-only) <paramref name="directory"/>; throws <see cref="StateFolderException"/> if it cannot.</summary>
    public StateStore(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        _directory = Path.GetFullPath(directory);
        Guard("open", () =>
        {
            CreateOwnerOnly(_directory);
            CreateOwnerOnly(Path.Combine(_directory, PendingFolder));
        });
    }

    /// <summary>The folder.</summary>
    public string Directory => _directory;

    /// <summary>Makes <paramref name="path"/> (and any missing parent) a folder only its owner can enter, as the state folder and the job's output are.</summary>
    public static void CreateOwnerOnly(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            System.IO.Directory.CreateDirectory(path);
            return;
        }
        System.IO.Directory.CreateDirectory(path, OwnerOnlyFolder);
        File.SetUnixFileMode(path, OwnerOnlyFolder);
    }

    /// <summary>Makes <paramref name="path"/> readable and writable by its owner only (on Unix).</summary>
    public static void MakeOwnerOnly(string path)
    {
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, OwnerOnlyFile);
    }

    /// <summary>
    /// Deletes what a crash can leave behind: temporary files, round files that <paramref name="progress"/>
    /// does not reference, and pending updates of rounds other than the open one. Returns the names deleted.
    /// </summary>
    public IReadOnlyList<string> RemoveOrphans(ServerProgress? progress) => Guard("clean", () =>
    {
        var removed = new List<string>();
        var keep = new HashSet<string>(StringComparer.Ordinal) { DatabaseFile };
        if (progress is not null)
        {
            keep.Add(progress.StateFile);
            for (var v = 1; v <= progress.BaseVersion; v++) keep.Add(BaseUpdateName(v));
        }
        foreach (var path in System.IO.Directory.EnumerateFiles(_directory))
        {
            var name = Path.GetFileName(path);
            var orphan = (name.StartsWith('.') && name.EndsWith(".tmp", StringComparison.Ordinal))
                || ((name.StartsWith("state-", StringComparison.Ordinal) || name.StartsWith("base-", StringComparison.Ordinal))
                    && name.EndsWith(".safetensors", StringComparison.Ordinal) && !keep.Contains(name));
            if (!orphan) continue;
            File.Delete(path);
            removed.Add(name);
        }
        var open = progress?.Round ?? 0;
        foreach (var path in System.IO.Directory.EnumerateFiles(Path.Combine(_directory, PendingFolder)))
        {
            var name = Path.GetFileName(path);
            if (PendingRound(name) == open && !name.StartsWith('.')) continue;
            File.Delete(path);
            removed.Add($"{PendingFolder}/{name}");
        }
        return (IReadOnlyList<string>)removed;
    });

    /// <summary>Keeps client <paramref name="clientId"/>'s accepted update of <paramref name="round"/> durably (flushed to disk before it returns).</summary>
    public void SavePending(int round, int clientId, ReadOnlySpan<byte> payload)
    {
        var path = Path.Combine(_directory, PendingFolder, PendingName(round, clientId));
        var temporary = Path.Combine(_directory, PendingFolder, $".{PendingName(round, clientId)}.tmp");
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = OwnerOnlyFile;
            using (var stream = new FileStream(temporary, options))
            {
                stream.Write(payload);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }
    }

    /// <summary>The accepted updates kept for <paramref name="round"/>, by client id.</summary>
    public IReadOnlyList<(int ClientId, byte[] Payload)> LoadPending(int round)
    {
        var list = new List<(int, byte[])>();
        foreach (var path in System.IO.Directory.EnumerateFiles(Path.Combine(_directory, PendingFolder), $"round-{round:D6}-client-*.safetensors").Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileNameWithoutExtension(path);
            list.Add((int.Parse(name[(name.LastIndexOf('-') + 1)..], CultureInfo.InvariantCulture), File.ReadAllBytes(path)));
        }
        return list;
    }

    /// <summary>Forgets the pending updates of rounds before <paramref name="openRound"/> (after a commit; a failure here only leaves files the next start removes).</summary>
    public void ClearPendingBefore(int openRound)
    {
        foreach (var path in System.IO.Directory.EnumerateFiles(Path.Combine(_directory, PendingFolder)))
        {
            if (PendingRound(Path.GetFileName(path)) is { } round && round < openRound) TryDelete(path);
        }
    }

    /// <summary>Forgets client <paramref name="clientId"/>'s kept update of <paramref name="round"/> (best effort).</summary>
    public void ClearPending(int round, int clientId) => TryDelete(Path.Combine(_directory, PendingFolder, PendingName(round, clientId)));

    private static string PendingName(int round, int clientId) => $"round-{round:D6}-client-{clientId:D6}.safetensors";

    private static int? PendingRound(string name) =>
        name.StartsWith("round-", StringComparison.Ordinal) && name.Length > 12 && int.TryParse(name.AsSpan(6, 6), NumberStyles.None, CultureInfo.InvariantCulture, out var round) ? round : null;

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Left for the next start's RemoveOrphans.
        }
        catch (UnauthorizedAccessException)
        {
            // Idem.
        }
    }

    private void Guard(string what, Action action) => Guard(what, () =>
    {
        action();
        return 0;
    });

    private T Guard<T>(string what, Func<T> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SqliteException)
        {
            throw new StateFolderException($"cannot {what} the state folder {_directory}: {e.Message} (check that it exists, is a folder and is writable by this user)", e);
        }
    }

    /// <summary>The last committed progress, or null for a fresh folder.</summary>
    public ServerProgress? LoadProgress() => Guard("read", ReadProgress);

    private ServerProgress? ReadProgress()
    {
        using var connection = Open();
        using var read = connection.CreateCommand();
        read.CommandText = "SELECT round, strategy, seed, base_version, state_file, base_fingerprint, example_counts FROM progress WHERE id = 0";
        using var row = read.ExecuteReader();
        if (!row.Read()) return null;
        var (round, strategy, seed, baseVersion, stateFile) = (row.GetInt32(0), row.GetString(1), row.GetInt32(2), row.GetInt32(3), row.GetString(4));
        var fingerprint = row.GetString(5);
        var exampleCounts = JsonSerializer.Deserialize<int[]>(row.GetString(6))!;
        using var ledger = connection.CreateCommand();
        ledger.CommandText = "SELECT round, client_id, download_bytes, upload_bytes FROM ledger ORDER BY sequence";
        using var entries = ledger.ExecuteReader();
        var list = new List<LedgerEntry>();
        while (entries.Read()) list.Add(new LedgerEntry(entries.GetInt32(0), entries.GetInt32(1), entries.GetInt64(2), entries.GetInt64(3)));
        using var metrics = connection.CreateCommand();
        metrics.CommandText = "SELECT json FROM metrics ORDER BY round";
        using var metricRows = metrics.ExecuteReader();
        var history = new List<RoundMetrics>();
        while (metricRows.Read()) history.Add(JsonSerializer.Deserialize<RoundMetrics>(metricRows.GetString(0))!);
        return new ServerProgress(round, strategy, seed, baseVersion, stateFile, fingerprint, exampleCounts, [.. list], [.. history.Where(m => m.Round < round)]);
    }

    /// <summary>The global state <paramref name="progress"/> points at.</summary>
    public GlobalState LoadState(ServerProgress progress)
    {
        ArgumentNullException.ThrowIfNull(progress);
        var file = SafetensorsFile.Load(Path.Combine(_directory, progress.StateFile));
        var meta = file.Metadata;
        int Int(string key) => int.Parse(meta[Key + key], CultureInfo.InvariantCulture);
        var modules = JsonSerializer.Deserialize<JsonElement[][]>(meta[Key + "modules"])!
            .Select(m => new LoraModuleSpec(m[0].GetString()!, m[1].GetInt32(), m[2].GetInt32())).ToArray();
        var rank = Int("rank");
        IReadOnlyList<HostAdapter> Adapters(string suffix) => modules.Select(m => new HostAdapter(m, rank,
            file.ReadFloats($"{m.Name}.{suffix}A"), file.ReadFloats($"{m.Name}.{suffix}B"))).ToArray();
        var clientRanks = JsonSerializer.Deserialize<Dictionary<int, int>>(meta[Key + "client_ranks"]);
        ServerAdamState? adam = meta.ContainsKey(Key + "adam_step")
            ? new ServerAdamState(Int("adam_step"), Adapters("adam_m."), Adapters("adam_v."))
            : null;
        return new GlobalState(Int("round"), Adapters("lora_"), BitConverter.Int32BitsToSingle(Int("alpha_bits")),
            Enum.Parse<LoraScaling>(meta[Key + "scaling"]), clientRanks, adam);
    }

    /// <summary>The file name of base update <paramref name="version"/> (the one that brings the base from version-1 to version).</summary>
    public static string BaseUpdateName(int version) => $"base-update-{version:D6}.safetensors";

    /// <summary>The base updates <paramref name="progress"/> committed, in version order.</summary>
    public IReadOnlyList<IReadOnlyList<StackedUpdate>> LoadBaseUpdates(ServerProgress progress)
    {
        ArgumentNullException.ThrowIfNull(progress);
        var updates = new List<IReadOnlyList<StackedUpdate>>();
        for (var v = 1; v <= progress.BaseVersion; v++)
        {
            var (from, list) = BasePayload.DecodeUpdates(Guard("read", () => File.ReadAllBytes(Path.Combine(_directory, BaseUpdateName(v)))));
            if (from != v - 1 || list.Count != 1) throw new StateFolderException($"{BaseUpdateName(v)} in {_directory} does not hold base update {v}");
            updates.Add(list[0]);
        }
        return updates;
    }

    /// <summary>
    /// Writes round <c>state.Round</c>'s files and commits them; <paramref name="baseUpdate"/> (FLoRA's, which makes
    /// <paramref name="baseVersion"/>) only when the round made one.
    /// </summary>
    public ServerProgress Save(ServerProgress? previous, GlobalState state, IReadOnlyList<StackedUpdate>? baseUpdate, string strategy, int seed, int baseVersion,
        string baseFingerprint, int[] exampleCounts, IReadOnlyList<LedgerEntry> ledger)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentException.ThrowIfNullOrEmpty(baseFingerprint);
        var stateFile = $"state-{state.Round:D6}.safetensors";
        WriteState(state, Path.Combine(_directory, stateFile));
        if (baseUpdate is not null)
        {
            var path = Path.Combine(_directory, BaseUpdateName(baseVersion));
            var temporary = Path.Combine(_directory, $".{BaseUpdateName(baseVersion)}.tmp");
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                stream.Write(BasePayload.EncodeUpdates(baseVersion - 1, [baseUpdate]));
                stream.Flush(flushToDisk: true);
            }
            MakeOwnerOnly(temporary);
            File.Move(temporary, path, overwrite: true);
        }
        var progress = new ServerProgress(state.Round, strategy, seed, baseVersion, stateFile, baseFingerprint, exampleCounts, [.. ledger], previous?.Metrics ?? []);
        using (var connection = Open())
        using (var transaction = connection.BeginTransaction())
        {
            using (var upsert = connection.CreateCommand())
            {
                upsert.CommandText = """
                    INSERT INTO progress (id, round, strategy, seed, base_version, state_file, base_fingerprint, example_counts)
                    VALUES (0, $round, $strategy, $seed, $baseVersion, $stateFile, $baseFingerprint, $exampleCounts)
                    ON CONFLICT (id) DO UPDATE SET round = excluded.round, strategy = excluded.strategy, seed = excluded.seed,
                        base_version = excluded.base_version, state_file = excluded.state_file, base_fingerprint = excluded.base_fingerprint,
                        example_counts = excluded.example_counts
                    """;
                upsert.Parameters.AddWithValue("$round", state.Round);
                upsert.Parameters.AddWithValue("$strategy", strategy);
                upsert.Parameters.AddWithValue("$seed", seed);
                upsert.Parameters.AddWithValue("$baseVersion", baseVersion);
                upsert.Parameters.AddWithValue("$stateFile", stateFile);
                upsert.Parameters.AddWithValue("$baseFingerprint", baseFingerprint);
                upsert.Parameters.AddWithValue("$exampleCounts", JsonSerializer.Serialize(exampleCounts));
                upsert.ExecuteNonQuery();
            }
            var committed = previous?.Ledger.Length ?? 0;
            for (var i = committed; i < ledger.Count; i++)
            {
                using var insert = connection.CreateCommand();
                insert.CommandText = "INSERT INTO ledger (sequence, round, client_id, download_bytes, upload_bytes) VALUES ($sequence, $round, $client, $down, $up)";
                insert.Parameters.AddWithValue("$sequence", i);
                insert.Parameters.AddWithValue("$round", ledger[i].Round);
                insert.Parameters.AddWithValue("$client", ledger[i].ClientId);
                insert.Parameters.AddWithValue("$down", ledger[i].DownloadBytes);
                insert.Parameters.AddWithValue("$up", ledger[i].UploadBytes);
                insert.ExecuteNonQuery();
            }
            transaction.Commit();
        }
        // Committed: a failure to delete the superseded files must not report the save as failed.
        if (previous is not null && previous.StateFile != stateFile) TryDelete(Path.Combine(_directory, previous.StateFile));
        return progress;
    }

    /// <summary>Keeps a committed round's metrics (a row of their own, written after the round's commit).</summary>
    public void SaveMetrics(RoundMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        using var connection = Open();
        using var insert = connection.CreateCommand();
        insert.CommandText = "INSERT INTO metrics (round, json) VALUES ($round, $json) ON CONFLICT (round) DO UPDATE SET json = excluded.json";
        insert.Parameters.AddWithValue("$round", metrics.Round);
        insert.Parameters.AddWithValue("$json", JsonSerializer.Serialize(metrics));
        insert.ExecuteNonQuery();
    }

    /// <summary>Opens job.db (no pooling: the file is released on dispose), creating its tables on first use.</summary>
    private SqliteConnection Open()
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = Path.Combine(_directory, DatabaseFile), Pooling = false }.ToString());
        connection.Open();
        MakeOwnerOnly(Path.Combine(_directory, DatabaseFile));
        using var create = connection.CreateCommand();
        create.CommandText = """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = FULL;
            CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 0), round INTEGER NOT NULL, strategy TEXT NOT NULL,
                seed INTEGER NOT NULL, base_version INTEGER NOT NULL, state_file TEXT NOT NULL, base_fingerprint TEXT NOT NULL, example_counts TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS ledger (sequence INTEGER PRIMARY KEY, round INTEGER NOT NULL, client_id INTEGER NOT NULL,
                download_bytes INTEGER NOT NULL, upload_bytes INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS metrics (round INTEGER PRIMARY KEY, json TEXT NOT NULL);
            """;
        create.ExecuteNonQuery();
        return connection;
    }

    private static void WriteState(GlobalState state, string path)
    {
        var writer = new SafetensorsWriter();
        void Add(IReadOnlyList<HostAdapter> adapters, string suffix)
        {
            foreach (var adapter in adapters)
            {
                writer.AddFloats($"{adapter.Module.Name}.{suffix}A", adapter.A, adapter.Rank, adapter.Module.InFeatures);
                writer.AddFloats($"{adapter.Module.Name}.{suffix}B", adapter.B, adapter.Module.OutFeatures, adapter.Rank);
            }
        }
        Add(state.Adapters, "lora_");
        var meta = writer.Metadata;
        meta[Key + "round"] = state.Round.ToString(CultureInfo.InvariantCulture);
        meta[Key + "rank"] = state.Rank.ToString(CultureInfo.InvariantCulture);
        meta[Key + "alpha_bits"] = BitConverter.SingleToInt32Bits(state.Alpha).ToString(CultureInfo.InvariantCulture);
        meta[Key + "scaling"] = state.Scaling.ToString();
        meta[Key + "modules"] = JsonSerializer.Serialize(state.Modules.Select(m => new object[] { m.Name, m.InFeatures, m.OutFeatures }));
        meta[Key + "client_ranks"] = JsonSerializer.Serialize(state.ClientRanks);
        if (state.ServerOptimizer is { } adam)
        {
            meta[Key + "adam_step"] = adam.Step.ToString(CultureInfo.InvariantCulture);
            Add(adam.FirstMoment, "adam_m.");
            Add(adam.SecondMoment, "adam_v.");
        }
        writer.Save(path);
        MakeOwnerOnly(path);
    }
}
