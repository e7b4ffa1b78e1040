using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FedLora.Model.Data;

/// <summary>
/// Reads task data in the common layouts (<see cref="TaskLayout"/>), from a JSON array of records or
/// from JSON Lines (one record per line, blank lines skipped), and federated folders of such files.
/// </summary>
/// <remarks>
/// <para>A file's layout is recognised from its first record: <c>choices</c> makes it closed-choice,
/// <c>label</c> classification, <c>output</c> Alpaca, <c>response</c> Dolly. Every later record must
/// have that layout's required fields. Unknown fields are ignored.</para>
/// <para>A file whose first non-blank character is '[' is a JSON array (records named by index);
/// anything else is JSON Lines (records named by line number, from 1). A malformed record is refused
/// with an <see cref="InvalidDataException"/> whose message starts with the path, then names the
/// record ("record 3" or "line 4") and the field.</para>
/// </remarks>
public static class TaskFiles
{
    /// <summary>The file name of a FedIT/Shepherd folder's test set, used as the test set when no other is named.</summary>
    public const string FolderTestFileName = "global_test.json";

    /// <summary>Reads one task file.</summary>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="InvalidDataException">A record is malformed, or the file holds none.</exception>
    public static IReadOnlyList<TaskRecord> Load(string path, TaskFileOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new TaskFileOptions();
        if (!File.Exists(path)) throw new FileNotFoundException($"task file not found: {path}", path);
        var text = File.ReadAllText(path, Encoding.UTF8);
        var records = new List<TaskRecord>();
        TaskLayout? layout = null;
        var trimmed = text.TrimStart();
        if (trimmed.StartsWith('['))
        {
            JsonDocument document;
            try
            {
                document = JsonDocument.Parse(text);
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
            }
            using (document)
            {
                var index = 0;
                foreach (var element in document.RootElement.EnumerateArray())
                {
                    records.Add(Read(element, $"{path}: record {index.ToString(CultureInfo.InvariantCulture)}", ref layout, options));
                    index++;
                }
            }
        }
        else
        {
            var lines = text.Split('\n');
            for (var i = 0; i < lines.Length; i++)
            {
                if (lines[i].Trim().Length == 0) continue;
                var where = $"{path}: line {(i + 1).ToString(CultureInfo.InvariantCulture)}";
                JsonDocument line;
                try
                {
                    line = JsonDocument.Parse(lines[i]);
                }
                catch (JsonException e)
                {
                    throw new InvalidDataException($"{where}: not valid JSON ({e.Message}); a .jsonl file holds one JSON object per line, a .json file one JSON array", e);
                }
                using (line) records.Add(Read(line.RootElement, where, ref layout, options));
            }
        }
        return records.Count > 0 ? records : throw new InvalidDataException($"{path}: the file holds no records");
    }

    /// <summary>
    /// The task files of a folder (*.json and *.jsonl, not in subfolders), in natural order of their
    /// names (local_training_2 before local_training_10), leaving out <paramref name="exclude"/>.
    /// </summary>
    public static IReadOnlyList<string> FilesIn(string directory, string? exclude = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var excluded = exclude is null ? null : Path.GetFullPath(exclude);
        return Directory.EnumerateFiles(directory)
            .Where(f => f.EndsWith(".json", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
            .Where(f => excluded is null || !string.Equals(Path.GetFullPath(f), excluded, StringComparison.Ordinal))
            .Order(NaturalOrder.Instance)
            .ToArray();
    }

    /// <summary>
    /// Reads a federated folder: one client per task file (never the folder's <see cref="FolderTestFileName"/>,
    /// a test set by its name), the test set from <paramref name="testPath"/>, else from that file, else <paramref name="heldOutFraction"/>
    /// of every client's records drawn with <paramref name="seed"/> (see <see cref="DataSplit.Sample"/>).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">There is no such folder.</exception>
    /// <exception cref="InvalidDataException">A file is malformed, or the folder holds no client file.</exception>
    public static FederatedTasks LoadFolder(string directory, string? testPath, double heldOutFraction, int seed, TaskFileOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"data folder not found: {directory}");
        var folderTest = Path.Combine(directory, FolderTestFileName);
        var test = testPath ?? (File.Exists(folderTest) ? folderTest : null);
        var files = FilesIn(directory, test).Where(f => !string.Equals(Path.GetFileName(f), FolderTestFileName, StringComparison.Ordinal)).ToArray();
        if (files.Length == 0) throw new InvalidDataException($"{directory}: no client files (*.json or *.jsonl, one per client)");
        var clients = files.Select(f => Load(f, options)).ToArray();
        if (test is not null) return new FederatedTasks(files, clients, Load(test, options), $"{test}");
        var split = clients.Select((records, k) => SplitClient(records, files[k], heldOutFraction, seed + k)).ToArray();
        return new FederatedTasks(files, [.. split.Select(s => s.Train)], [.. split.SelectMany(s => s.HeldOut)],
            $"{heldOutFraction.ToString("0.###", CultureInfo.InvariantCulture)} of every client's records, held out");
    }

    private static (TaskRecord[] Train, TaskRecord[] HeldOut) SplitClient(IReadOnlyList<TaskRecord> records, string path, double fraction, int seed)
    {
        if (records.Count < 2) throw new InvalidDataException($"{path}: {records.Count} record cannot be split into training and test records; give the test set with --test");
        return DataSplit.Sample(records, fraction, seed);
    }

    private static TaskRecord Read(JsonElement record, string where, ref TaskLayout? layout, TaskFileOptions options)
    {
        if (record.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{where}: expected an object, found {record.ValueKind}");
        layout ??= Recognise(record, where);
        var client = options.ClientField is { } field ? ClientOf(record, field, where) : null;
        switch (layout.Value)
        {
            case TaskLayout.Dolly:
                return new TaskRecord(new InstructionRecord(
                    Text(record, "instruction", where, required: true), Text(record, "context", where, required: false),
                    Text(record, "response", where, required: true), Text(record, "category", where, required: false)), Client: client);
            case TaskLayout.Alpaca:
                return new TaskRecord(new InstructionRecord(
                    Text(record, "instruction", where, required: true), Text(record, "input", where, required: false),
                    Text(record, "output", where, required: true), Text(record, "category", where, required: false)), Client: client);
            case TaskLayout.ClosedChoice:
            {
                var choices = Choices(record, where);
                var answer = AnswerIndex(record, choices, where);
                var category = Text(record, "subject", where, required: false);
                if (category.Length == 0) category = Text(record, "category", where, required: false);
                var instruction = new InstructionRecord(Text(record, "question", where, required: true), Text(record, "context", where, required: false),
                    choices[answer], category);
                return new TaskRecord(instruction, choices, answer, client);
            }
            default:
            {
                var labels = options.Labels;
                if (labels is null || labels.Count < 2)
                {
                    throw new InvalidDataException($"{where}: a classification record (text, label) needs a declared label set of at least two labels (--labels a,b,...)");
                }
                var label = AnswerIndex(record, labels, where, "label");
                var prompt = Text(record, "instruction", where, required: false);
                if (prompt.Length == 0) prompt = $"Label the text as one of: {string.Join(", ", labels)}.";
                var category = Text(record, "category", where, required: false);
                var instruction = new InstructionRecord(prompt, Text(record, "text", where, required: true), labels[label],
                    category.Length > 0 ? category : labels[label]);
                return new TaskRecord(instruction, labels, label, client);
            }
        }
    }

    private static TaskLayout Recognise(JsonElement record, string where)
    {
        if (record.TryGetProperty("choices", out _)) return TaskLayout.ClosedChoice;
        if (record.TryGetProperty("label", out _)) return TaskLayout.Classification;
        if (record.TryGetProperty("output", out _)) return TaskLayout.Alpaca;
        if (record.TryGetProperty("response", out _)) return TaskLayout.Dolly;
        var fields = string.Join(", ", record.EnumerateObject().Select(p => p.Name));
        throw new InvalidDataException(
            $"{where}: no known layout: expected instruction/context/response/category (Dolly), instruction/input/output (Alpaca), question/choices/answer (closed choice) or text/label (classification); the record has {(fields.Length == 0 ? "no fields" : fields)}");
    }

    private static string Text(JsonElement record, string name, string where, bool required)
    {
        if (!record.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return required ? throw new InvalidDataException($"{where}: field '{name}' is missing") : "";
        }
        return value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new InvalidDataException($"{where}: field '{name}' must be a string, found {value.ValueKind}");
    }

    private static string[] Choices(JsonElement record, string where)
    {
        var value = record.GetProperty("choices");
        if (value.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"{where}: field 'choices' must be an array of strings, found {value.ValueKind}");
        var choices = new List<string>();
        foreach (var choice in value.EnumerateArray())
        {
            if (choice.ValueKind != JsonValueKind.String)
            {
                throw new InvalidDataException($"{where}: field 'choices': choice {choices.Count} must be a string, found {choice.ValueKind}");
            }
            var text = choice.GetString()!;
            if (text.Trim().Length == 0) throw new InvalidDataException($"{where}: field 'choices': choice {choices.Count} is empty");
            choices.Add(text);
        }
        return choices.Count >= 2 ? [.. choices] : throw new InvalidDataException($"{where}: field 'choices' must hold at least two choices, found {choices.Count}");
    }

    /// <summary>The answer as an index into <paramref name="choices"/>: a whole number, a letter A, B, ... or the text of one choice.</summary>
    private static int AnswerIndex(JsonElement record, IReadOnlyList<string> choices, string where, string field = "answer")
    {
        if (!record.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            throw new InvalidDataException($"{where}: field '{field}' is missing");
        }
        if (value.ValueKind == JsonValueKind.Number)
        {
            if (value.TryGetInt32(out var index) && index >= 0 && index < choices.Count) return index;
            throw new InvalidDataException($"{where}: field '{field}': {value.GetRawText()} is not an index of the {choices.Count} choices (0..{choices.Count - 1})");
        }
        if (value.ValueKind != JsonValueKind.String)
        {
            throw new InvalidDataException($"{where}: field '{field}' must be a choice's index, letter or text, found {value.ValueKind}");
        }
        var text = value.GetString()!;
        for (var i = 0; i < choices.Count; i++)
        {
            if (string.Equals(choices[i], text, StringComparison.Ordinal)) return i;
        }
        if (field == "answer" && text.Length == 1 && char.IsAsciiLetterUpper(text[0]) && text[0] - 'A' < choices.Count) return text[0] - 'A';
        throw new InvalidDataException(
            $"{where}: field '{field}': '{text}' is none of the {(field == "label" ? "declared labels" : "choices")} ({string.Join(", ", choices.Select(c => $"'{c}'"))}){(field == "answer" ? $" nor a letter A..{(char)('A' + choices.Count - 1)}" : "")}");
    }

    private static string ClientOf(JsonElement record, string field, string where)
    {
        if (!record.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            throw new InvalidDataException($"{where}: field '{field}' (the client id) is missing");
        }
        return value.ValueKind switch
        {
            JsonValueKind.String => value.GetString()!,
            JsonValueKind.Number => value.GetRawText(),
            _ => throw new InvalidDataException($"{where}: field '{field}' (the client id) must be a string or a number, found {value.ValueKind}"),
        };
    }
}

/// <summary>A federated data set: one client per file, and the test set every method is evaluated on.</summary>
/// <param name="Files">Client k's file.</param>
/// <param name="Clients">Client k's training records.</param>
/// <param name="Test">The test records.</param>
/// <param name="TestSource">Where the test records came from (a path, or the held-out fraction), for reports.</param>
public sealed record FederatedTasks(IReadOnlyList<string> Files, IReadOnlyList<IReadOnlyList<TaskRecord>> Clients, IReadOnlyList<TaskRecord> Test, string TestSource);

/// <summary>Orders names as people read them: runs of digits compare by value (a2 before a10), the rest ordinally.</summary>
public sealed class NaturalOrder : IComparer<string>
{
    /// <summary>The one instance.</summary>
    public static NaturalOrder Instance { get; } = new();

    private NaturalOrder()
    {
    }

    /// <inheritdoc/>
    public int Compare(string? x, string? y)
    {
        if (x is null || y is null) return x is null ? (y is null ? 0 : -1) : 1;
        int i = 0, j = 0;
        while (i < x.Length && j < y.Length)
        {
            if (char.IsAsciiDigit(x[i]) && char.IsAsciiDigit(y[j]))
            {
                var (si, sj) = (i, j);
                while (i < x.Length && char.IsAsciiDigit(x[i])) i++;
                while (j < y.Length && char.IsAsciiDigit(y[j])) j++;
                var (a, b) = (x[si..i].TrimStart('0'), y[sj..j].TrimStart('0'));
                var byValue = a.Length != b.Length ? a.Length.CompareTo(b.Length) : string.CompareOrdinal(a, b);
                if (byValue != 0) return byValue;
            }
            else
            {
                if (x[i] != y[j]) return x[i].CompareTo(y[j]);
                i++;
                j++;
            }
        }
        return (x.Length - i).CompareTo(y.Length - j);
    }
}
