using System.Globalization;
using System.Text.Json;

namespace FedLora.Model.Data;

/// <summary>
/// databricks-dolly-15k as FedLora ships it (data/dolly15k-fedit-10): one JSON array of
/// <c>{"instruction", "context", "response", "category"}</c> objects per client
/// (local_training_{k}.json, k = 0..K-1) and a held-out global_test.json.
/// </summary>
public static class Dolly
{
    /// <summary>The file name of client <paramref name="client"/>'s records.</summary>
    public static string ClientFileName(int client) => $"local_training_{client.ToString(CultureInfo.InvariantCulture)}.json";

    /// <summary>The file name of the held-out test records.</summary>
    public const string TestFileName = "global_test.json";

    /// <summary>
    /// Reads one Dolly file. instruction and response must be strings; context and category may
    /// be missing or null (read as empty).
    /// </summary>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="InvalidDataException">The file is not a JSON array of records; the message names the path, the record and the field.</exception>
    public static IReadOnlyList<InstructionRecord> Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Dolly file not found: {path}", path);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Array)
            {
                throw new InvalidDataException($"{path}: expected a JSON array of records, found {root.ValueKind}");
            }
            var records = new List<InstructionRecord>(root.GetArrayLength());
            var index = 0;
            foreach (var element in root.EnumerateArray())
            {
                if (element.ValueKind != JsonValueKind.Object)
                {
                    throw new InvalidDataException($"{path}: record {index}: expected an object, found {element.ValueKind}");
                }
                records.Add(new InstructionRecord(
                    Field(element, "instruction", required: true),
                    Field(element, "context", required: false),
                    Field(element, "response", required: true),
                    Field(element, "category", required: false)));
                index++;
            }
            return records;

            string Field(JsonElement record, string name, bool required)
            {
                if (!record.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
                {
                    return required ? throw new InvalidDataException($"{path}: record {index}: field '{name}' is missing") : "";
                }
                return value.ValueKind == JsonValueKind.String
                    ? value.GetString()!
                    : throw new InvalidDataException($"{path}: record {index}: field '{name}' must be a string, found {value.ValueKind}");
            }
        }
    }

    /// <summary>
    /// Reads a federated Dolly folder: clients 0..K-1 from local_training_{k}.json (K = the number
    /// of such files, which must be numbered without gaps) and the global test set.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">There is no such folder.</exception>
    /// <exception cref="FileNotFoundException">A client file or global_test.json is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed.</exception>
    public static FederatedInstructions LoadFederated(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Dolly folder not found: {directory}");
        var count = Directory.GetFiles(directory, "local_training_*.json").Length;
        if (count == 0) throw new FileNotFoundException($"{directory}: no client files (local_training_0.json, ...)");
        var clients = new IReadOnlyList<InstructionRecord>[count];
        for (var k = 0; k < count; k++)
        {
            var path = Path.Combine(directory, ClientFileName(k));
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"{directory}: {count} client files, but {ClientFileName(k)} is missing (clients must be numbered 0..{count - 1})", path);
            }
            clients[k] = Load(path);
        }
        return new FederatedInstructions(clients, Load(Path.Combine(directory, TestFileName)));
    }
}

/// <summary>Instruction records split over clients, with a shared held-out test set.</summary>
/// <param name="Clients">Client k's records.</param>
/// <param name="Test">The held-out records every method is evaluated on.</param>
public sealed record FederatedInstructions(IReadOnlyList<IReadOnlyList<InstructionRecord>> Clients, IReadOnlyList<InstructionRecord> Test);
