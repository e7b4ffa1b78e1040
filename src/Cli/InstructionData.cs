using System.Globalization;
using FedLora.Federation;
using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Cli;

/// <summary>Dolly-15k as FedLora's commands use it: client shards, tokenized, and the held-out test set.</summary>
internal sealed class InstructionData
{
    private readonly ITokenizer _tokenizer;

    private InstructionData(IReadOnlyList<IReadOnlyList<InstructionExample>> clients, IReadOnlyList<InstructionRecord> test, ITokenizer tokenizer)
    {
        Clients = clients;
        Test = test;
        _tokenizer = tokenizer;
    }

    /// <summary>Each client's tokenized examples.</summary>
    public IReadOnlyList<IReadOnlyList<InstructionExample>> Clients { get; }

    /// <summary>The 80-record held-out set (10 per category).</summary>
    public IReadOnlyList<InstructionRecord> Test { get; }

    /// <summary>
    /// Loads dolly15k-fedit-10 under <paramref name="dataDirectory"/> and splits it: "natural" keeps the
    /// shipped 10-client split; "iid" and "dirichlet:ALPHA" pool every record and re-split it over
    /// <paramref name="clientCount"/> clients (by category for Dirichlet). Text becomes tokens with
    /// <paramref name="tokenizer"/>, the model's.
    /// </summary>
    public static InstructionData Load(string dataDirectory, string partition, int clientCount, int seed, ITokenizer tokenizer)
    {
        var directory = Path.Combine(dataDirectory, "dolly15k-fedit-10");
        Paths.RequireDirectory(directory, "Dolly data folder", "Pass --data with the folder that holds dolly15k-fedit-10/ (the repository's data/).");
        var federated = Dolly.LoadFederated(directory);
        IReadOnlyList<IReadOnlyList<InstructionRecord>> shards;
        var pooled = federated.Clients.SelectMany(c => c).ToArray();
        var kind = partition.Trim().ToLowerInvariant();
        if (kind == "natural")
        {
            shards = federated.Clients;
        }
        else if (kind == "iid")
        {
            shards = Partitioner.Iid(pooled, clientCount, seed);
        }
        else if (kind.StartsWith("dirichlet:", StringComparison.Ordinal)
                 && double.TryParse(kind["dirichlet:".Length..], NumberStyles.Float, CultureInfo.InvariantCulture, out var alpha) && alpha > 0)
        {
            shards = Partitioner.Dirichlet(pooled, record => record.Category, clientCount, alpha, seed);
        }
        else
        {
            throw new UsageException($"--partition '{partition}' is not natural, iid or dirichlet:ALPHA (ALPHA > 0, e.g. dirichlet:0.5)");
        }
        var clients = shards.Select(shard => (IReadOnlyList<InstructionExample>)shard.Select(record => InstructionTemplate.Tokenize(record, tokenizer)).ToArray()).ToArray();
        return new InstructionData(clients, federated.Test, tokenizer);
    }

    /// <summary>The end-of-text token of the tokenizer the examples were made with (batches pad with it).</summary>
    public int EndOfText => _tokenizer.EndOfText;

    /// <summary>All clients' examples together: the centralized baseline's training set.</summary>
    public IReadOnlyList<InstructionExample> Pooled() => Clients.SelectMany(c => c).ToArray();

    /// <summary>The held-out set as evaluation sets: "all", then one per category.</summary>
    public IReadOnlyList<EvaluationSet> EvaluationSets(int batch, int context)
    {
        var sets = new List<EvaluationSet>
        {
            new("all", InstructionBatcher.InOrder(Test.Select(Tokenize).ToArray(), batch, context, EndOfText).ToList()),
        };
        foreach (var group in Test.GroupBy(r => r.Category, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            sets.Add(new EvaluationSet(group.Key, InstructionBatcher.InOrder(group.Select(Tokenize).ToArray(), batch, context, EndOfText).ToList()));
        }
        return sets;
    }

    private InstructionExample Tokenize(InstructionRecord record) => InstructionTemplate.Tokenize(record, _tokenizer);
}
