using System.Globalization;
using FedLora.Model.Data;
using FedLora.Model.Tokenization;
using FedLora.Runtime;

namespace FedLora.Cli;

/// <summary>Where a job's data comes from, as the command line gives it.</summary>
/// <param name="Data">--data: a folder of per-client files, one pooled file, or (speaker partition) a plain-text play.</param>
/// <param name="Test">--test: the test file; null for the folder's global_test.json or a held-out fraction.</param>
/// <param name="TestFraction">--test-fraction: the share of every client's records held out when there is no test file.</param>
/// <param name="Labels">--labels: the declared label set of classification records, comma-separated.</param>
/// <param name="Partition">--partition: natural, iid, dirichlet:ALPHA, field:NAME or speaker.</param>
/// <param name="ClientCount">--clients: the clients of iid, dirichlet and speaker partitions.</param>
/// <param name="Context">--context: speaker text is cut into examples of T+1 tokens.</param>
/// <param name="Seed">--seed.</param>
internal sealed record DataRequest(string Data, string? Test, double TestFraction, string? Labels, string Partition, int ClientCount, int Context, int Seed);

/// <summary>
/// A job's data as FedLora's commands use it: each client's tokenized training examples, the test
/// records the task metrics score, and the test examples the held-out loss is measured on.
/// </summary>
internal sealed class InstructionData
{
    private const string NoneCategory = "(none)";

    /// <summary>The most test windows a speaker client holds out.</summary>
    public const int MaxSpeakerTestWindows = 32;

    private InstructionData(IReadOnlyList<IReadOnlyList<InstructionExample>> clients, IReadOnlyList<TaskRecord> test,
        IReadOnlyList<(string Category, InstructionExample Example)> testExamples, string description, ITokenizer tokenizer)
    {
        Clients = clients;
        EndOfText = tokenizer.EndOfText;
        Test = test;
        TestExamples = testExamples;
        Description = description;
    }

    /// <summary>Each client's tokenized examples.</summary>
    public IReadOnlyList<IReadOnlyList<InstructionExample>> Clients { get; }

    /// <summary>The test records the task metrics score (none for plain text).</summary>
    public IReadOnlyList<TaskRecord> Test { get; }

    /// <summary>The held-out examples, with their category: the held-out loss's data.</summary>
    public IReadOnlyList<(string Category, InstructionExample Example)> TestExamples { get; }

    /// <summary>The end-of-text token of the tokenizer the examples were made with (batches pad with it).</summary>
    public int EndOfText { get; }

    /// <summary>Where the clients and the test set came from, in a sentence.</summary>
    public string Description { get; }

    /// <summary>Whether the test set has closed-choice records, which the task metrics score cheaply.</summary>
    public bool HasClosedChoice => Test.Any(r => r.IsClosedChoice);

    /// <summary>The shipped data: Dolly-15k's 10 clients and 80-record test set (the default of --data).</summary>
    public static string DefaultFolder => Path.Combine(Paths.DefaultDataDirectory, "dolly15k-fedit-10");

    /// <summary>The shipped Tiny Shakespeare (the default text of --partition speaker).</summary>
    public static string DefaultText => Path.Combine(Paths.DefaultDataDirectory, "tinyshakespeare", "input.txt");

    /// <summary>Loads the shipped-layout data the way <c>join</c> names it: a folder, a partition, the clients and the seed.</summary>
    public static InstructionData Load(string data, string partition, int clientCount, int seed, ITokenizer tokenizer) =>
        Load(new DataRequest(data, null, 0.1, null, partition, clientCount, 128, seed), tokenizer);

    /// <summary>
    /// Loads and splits the data. A folder gives one client per *.json / *.jsonl file (natural
    /// partition), its test set being --test, else the folder's global_test.json, else --test-fraction
    /// of every client. A single file is pooled: --test, else --test-fraction of it, is the test set,
    /// and --partition splits the rest. iid and dirichlet:ALPHA (by category, or label for
    /// classification records) re-split a folder's records too; field:NAME gives each value of a
    /// record field its own client; speaker splits a play (Tiny Shakespeare by default) by speaker.
    /// For compatibility, a folder that holds dolly15k-fedit-10/ and no task file of its own stands
    /// for that subfolder.
    /// </summary>
    public static InstructionData Load(DataRequest request, ITokenizer tokenizer)
    {
        var kind = request.Partition.Trim().ToLowerInvariant();
        if (kind == "speaker") return LoadSpeakers(request, tokenizer);
        var fieldName = kind.StartsWith("field:", StringComparison.Ordinal) ? request.Partition.Trim()["field:".Length..] : null;
        if (fieldName is { Length: 0 }) throw new UsageException("--partition field:NAME needs the name of the record field that holds the client id");
        var labels = request.Labels?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (labels is { Length: < 2 }) throw new UsageException($"--labels '{request.Labels}' must declare at least two labels, comma-separated");
        var options = new TaskFileOptions(labels, fieldName);
        if (request.Test is not null) Paths.RequireFile(request.Test, "test file", "Pass --test with a task file (JSON array or JSONL).");
        var test = request.Test is null ? null : TaskFiles.Load(request.Test, options);
        if (!(request.TestFraction > 0 && request.TestFraction < 1)) throw new UsageException($"--test-fraction {request.TestFraction} must be in (0, 1)");

        IReadOnlyList<IReadOnlyList<TaskRecord>> natural;
        IReadOnlyList<TaskRecord> testRecords;
        string source;
        var path = ResolveData(request.Data);
        if (File.Exists(path))
        {
            if (kind == "natural")
            {
                throw new UsageException($"--data '{path}' is one pooled file: split it with --partition iid, dirichlet:ALPHA or field:NAME (or give a folder with one file per client)");
            }
            var pooled = TaskFiles.Load(path, options);
            if (test is null)
            {
                if (pooled.Count < 2) throw new UsageException($"{path}: {pooled.Count} record cannot be split into training and test records; pass --test FILE");
                var (train, heldOut) = DataSplit.Sample(pooled, request.TestFraction, request.Seed);
                (natural, testRecords, source) = ([train], heldOut, $"{request.TestFraction.ToString("0.###", CultureInfo.InvariantCulture)} of {path}, held out");
            }
            else
            {
                (natural, testRecords, source) = ([pooled], test, request.Test!);
            }
        }
        else
        {
            var folder = TaskFiles.LoadFolder(path, request.Test, request.TestFraction, request.Seed, options);
            (natural, testRecords, source) = (folder.Clients, folder.Test, folder.TestSource);
        }

        var pool = natural.SelectMany(c => c).ToArray();
        IReadOnlyList<IReadOnlyList<TaskRecord>> shards;
        if (kind == "natural")
        {
            shards = natural;
        }
        else if (kind == "iid")
        {
            shards = Partitioner.Iid(pool, request.ClientCount, request.Seed);
        }
        else if (kind.StartsWith("dirichlet:", StringComparison.Ordinal)
                 && double.TryParse(kind["dirichlet:".Length..], NumberStyles.Float, CultureInfo.InvariantCulture, out var alpha) && alpha > 0)
        {
            shards = Partitioner.Dirichlet(pool, record => record.Instruction.Category, request.ClientCount, alpha, request.Seed);
        }
        else if (fieldName is not null)
        {
            shards = pool.GroupBy(r => r.Client!, StringComparer.Ordinal).OrderBy(g => g.Key, NaturalOrder.Instance).Select(g => (IReadOnlyList<TaskRecord>)[.. g]).ToArray();
        }
        else
        {
            throw new UsageException($"--partition '{request.Partition}' is not natural, iid, dirichlet:ALPHA (ALPHA > 0, e.g. dirichlet:0.5), field:NAME or speaker");
        }
        var clients = shards.Select(shard => (IReadOnlyList<InstructionExample>)shard.Select(r => InstructionTemplate.Tokenize(r.Instruction, tokenizer)).ToArray()).ToArray();
        var testExamples = testRecords.Select(r => (CategoryOf(r.Instruction.Category), InstructionTemplate.Tokenize(r.Instruction, tokenizer))).ToArray();
        return new InstructionData(clients, testRecords, testExamples,
            $"{clients.Length} clients ({clients.Sum(c => c.Count):N0} examples, {request.Partition} partition of {path}); test: {testRecords.Count} records from {source}",
            tokenizer);
    }

    /// <summary>
    /// Tiny Shakespeare split by speaker (<see cref="TinyShakespeare.SplitBySpeaker"/>): each client's
    /// text is cut into examples of T+1 tokens (every token a target, consecutive examples sharing one
    /// token, as text windows do), and the last --test-fraction of each client's examples, at most
    /// <see cref="MaxSpeakerTestWindows"/>, is its test share, scored per client (a play is large:
    /// 10% of it would cost more to evaluate each round than the round's training).
    /// </summary>
    private static InstructionData LoadSpeakers(DataRequest request, ITokenizer tokenizer)
    {
        var path = request.Data;
        if (Directory.Exists(path) && File.Exists(Path.Combine(path, "tinyshakespeare", "input.txt"))) path = Path.Combine(path, "tinyshakespeare", "input.txt");
        else if (Directory.Exists(path) && Path.GetFullPath(path) == Path.GetFullPath(DefaultFolder)) path = DefaultText;
        Paths.RequireFile(path, "play text", "--partition speaker reads a play in Tiny Shakespeare's layout: pass --data with its text file (the shipped one is data/tinyshakespeare/input.txt).");
        IReadOnlyList<ShakespeareClient> speakers;
        try
        {
            speakers = TinyShakespeare.SplitBySpeaker(TinyShakespeare.LoadText(path), request.ClientCount);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--partition speaker: {e.Message}");
        }
        var t = request.Context;
        var clients = new List<IReadOnlyList<InstructionExample>>();
        var test = new List<(string, InstructionExample)>();
        for (var k = 0; k < speakers.Count; k++)
        {
            var tokens = tokenizer.Encode(speakers[k].Text);
            var windows = Enumerable.Range(0, (tokens.Length - 1) / t).Select(i => new InstructionExample(tokens[(i * t)..(i * t + t + 1)], 0)).ToArray();
            if (windows.Length < 2) throw new UsageException($"--partition speaker: client {k} has {tokens.Length} tokens, too few for two windows of {t + 1}; use fewer --clients or a smaller --context");
            var (train, heldOut) = DataSplit.Tail(windows, Math.Min(request.TestFraction, (double)MaxSpeakerTestWindows / windows.Length));
            clients.Add(train);
            test.AddRange(heldOut.Select(w => ($"client {k.ToString("00", CultureInfo.InvariantCulture)}", w)));
        }
        return new InstructionData(clients, [], test,
            $"{clients.Count} clients by speaker of {path} ({clients.Sum(c => c.Count):N0} windows of {t + 1} tokens); test: the last {request.TestFraction.ToString("0.###", CultureInfo.InvariantCulture)} of every client's windows, at most {MaxSpeakerTestWindows} each", tokenizer);
    }

    /// <summary>Test records alone (no clients): what <c>evaluate</c> scores.</summary>
    public static InstructionData TestOnly(IReadOnlyList<TaskRecord> test, string source, ITokenizer tokenizer) =>
        new([], test, test.Select(r => (CategoryOf(r.Instruction.Category), InstructionTemplate.Tokenize(r.Instruction, tokenizer))).ToArray(),
            $"{test.Count} test records from {source}", tokenizer);

    /// <summary>A data path as given, or the dolly15k-fedit-10 folder under it (the old meaning of --data).</summary>
    public static string ResolveData(string data)
    {
        if (File.Exists(data)) return data;
        Paths.RequireDirectory(data, "data", "Pass --data with a folder of per-client task files (*.json, *.jsonl) or one pooled task file.");
        var legacy = Path.Combine(data, "dolly15k-fedit-10");
        return Directory.Exists(legacy) && TaskFiles.FilesIn(data).Count == 0 ? legacy : data;
    }

    private static string CategoryOf(string category) => category.Length > 0 ? category : NoneCategory;

    /// <summary>All clients' examples together: the centralized baseline's training set.</summary>
    public IReadOnlyList<InstructionExample> Pooled() => Clients.SelectMany(c => c).ToArray();

    /// <summary>The held-out set as evaluation sets: "all", then one per category.</summary>
    public IReadOnlyList<EvaluationSet> EvaluationSets(int batch, int context)
    {
        var sets = new List<EvaluationSet>
        {
            new("all", InstructionBatcher.InOrder(TestExamples.Select(e => e.Example).ToArray(), batch, context, EndOfText).ToList()),
        };
        foreach (var group in TestExamples.GroupBy(e => e.Category, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            sets.Add(new EvaluationSet(group.Key, InstructionBatcher.InOrder(group.Select(e => e.Example).ToArray(), batch, context, EndOfText).ToList()));
        }
        return sets;
    }
}
