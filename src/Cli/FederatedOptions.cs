using System.CommandLine;
using FedLora.Federation;
using FedLora.Federation.Privacy;
using FedLora.Model;
using FedLora.Model.Training;

namespace FedLora.Cli;

/// <summary>A federated job as the command line describes it, validated before any work.</summary>
internal sealed record FederatedJob(
    int[] Ranks, double[]? Ratios, int GlobalRank, float? Alpha, LoraTargets Targets, int Rounds, int ClientsPerRound,
    TrainingOptions Local, int Batch, int Context, string Partition, int ClientCount, string ModelPath, DataRequest Data,
    string Device, int Seed, string Output, TaskEvaluationSchedule Evaluation)
{
    /// <summary>Client-level differential privacy (--dp-*); null: off.</summary>
    public DpSettings? Dp { get; init; }

    /// <summary>
    /// The job for the <paramref name="clients"/> clients the data turned out to have: the budgets and
    /// the clients per round must fit them (checked here because a folder's clients are its files).
    /// </summary>
    public FederatedJob ForClients(int clients)
    {
        if (Ranks.Length != clients)
        {
            throw new UsageException($"--ranks lists {Ranks.Length} budgets but there are {clients} clients: give exactly one per client");
        }
        if (Ratios is not null && Ratios.Length != clients)
        {
            throw new UsageException($"--ratios lists {Ratios.Length} ratios but there are {clients} clients: give exactly one per client");
        }
        if (ClientsPerRound > clients) throw new UsageException($"--clients-per-round {ClientsPerRound} exceeds the {clients} clients");
        return this with { ClientCount = clients };
    }

    /// <summary>The strategy's settings and every client's budget for <paramref name="method"/> (<see cref="StrategyCatalog.Budgets"/>).</summary>
    public (LoraSettings Settings, IReadOnlyList<ClientBudget> Budgets) BudgetsFor(string method) =>
        StrategyCatalog.Budgets(method, Ranks, GlobalRank, Alpha, Ratios);
}

/// <summary>The options <c>simulate</c> and <c>compare</c> share.</summary>
internal sealed class FederatedOptions
{
    public const string DefaultRanks = "64,32,16,16,8,8,4,4,4,4";

    public Option<string> Ranks { get; } = new("--ranks")
    {
        Description = "Each client's LoRA rank budget, one per client (FSLoRA: sketch ratios r_k / global rank)",
        DefaultValueFactory = _ => DefaultRanks,
    };

    public Option<string?> Ratios { get; } = new("--ratios") { Description = "FSLoRA only: each client's sketch ratio in (0, 1], instead of --ranks" };
    public Option<int?> GlobalRank { get; } = new("--global-rank") { Description = "The global adapter's rank r (default: the largest budget)" };
    public Option<float?> Alpha { get; } = new("--alpha") { Description = "LoRA alpha of the global rank (default 2r); clients train at the same scale alpha/r" };

    public Option<string> Targets { get; } = new("--targets")
    {
        Description = "Layers with adapters: all, or a list of qkv, attn-proj, mlp-up, mlp-down",
        DefaultValueFactory = _ => "all",
    };

    public Option<int> Rounds { get; } = CommonOptions.Positive("--rounds", "Federated rounds", 20);
    public Option<int> ClientsPerRound { get; } = CommonOptions.Positive("--clients-per-round", "Clients sampled each round (M)", 5);
    public Option<int> LocalSteps { get; } = CommonOptions.Positive("--local-steps", "AdamW steps each sampled client takes per round", 10);
    public Option<int> Batch { get; } = CommonOptions.Positive("--batch", "Examples per local step", 8);
    public Option<int> Context { get; } = CommonOptions.Positive("--context", "Tokens per example window (<= the model's context)", 128);
    public Option<float> LearningRate { get; } = CommonOptions.Positive("--lr", "Clients' AdamW learning rate", 2e-3f);

    public Option<string> Partition { get; } = new("--partition")
    {
        Description = "How data is split: natural (one client per file of the --data folder), iid, dirichlet:ALPHA (by category or label), field:NAME (a record field names the client) or speaker (Tiny Shakespeare's speakers)",
        DefaultValueFactory = _ => "natural",
    };

    public Option<int> Clients { get; } = CommonOptions.Positive("--clients", "Clients for iid, dirichlet and speaker partitions (natural: one per file)", 10);
    public Option<string> Model { get; } = CommonOptions.BaseModel();
    public Option<string> Data { get; } = CommonOptions.Data();
    public Option<string?> Test { get; } = CommonOptions.Test();
    public Option<double> TestFraction { get; } = CommonOptions.TestFraction();
    public Option<string?> Labels { get; } = CommonOptions.Labels();
    public Option<int> EvalEvery { get; } = CommonOptions.EvalEvery("rounds");
    public Option<int> EvalTokens { get; } = CommonOptions.EvalTokens();
    public Option<string> Device { get; } = CommonOptions.Device();
    public Option<int> Seed { get; } = CommonOptions.Seed();
    public Option<string?> Output { get; } = new("--out") { Description = "Folder for results (JSON, CSV, plot); default: runs/VERB-TIME" };
    public DpOptions Privacy { get; } = new();

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Ranks, Ratios, GlobalRank, Alpha, Targets, Rounds, ClientsPerRound, LocalSteps, Batch, Context,
                     LearningRate, Partition, Clients, Model, Data, Test, TestFraction, Labels, EvalEvery, EvalTokens, Device, Seed, Output })
        {
            command.Options.Add(option);
        }
        Privacy.AddTo(command);
    }

    /// <summary>Reads and checks every option; throws <see cref="UsageException"/> before any work.</summary>
    public FederatedJob Read(ParseResult parse, string verb)
    {
        var ranks = CommonOptions.ParseInts(parse.GetValue(Ranks)!, "--ranks");
        if (ranks.Length == 0 || ranks.Any(r => r < 1)) throw new UsageException($"--ranks '{parse.GetValue(Ranks)}' must list one rank >= 1 per client");
        var ratiosText = parse.GetValue(Ratios);
        var ratios = ratiosText is null ? null : CommonOptions.ParseDoubles(ratiosText, "--ratios");
        if (ratios is not null && ratios.Any(q => !(q > 0 && q <= 1)))
        {
            throw new UsageException($"--ratios '{ratiosText}': every sketch ratio must be in (0, 1]");
        }
        var partition = parse.GetValue(Partition)!;
        var globalRank = parse.GetValue(GlobalRank) ?? ranks.Max();
        if (globalRank < ranks.Max()) throw new UsageException($"--global-rank {globalRank} is below the largest budget {ranks.Max()}");
        var perRound = parse.GetValue(ClientsPerRound);
        var local = new TrainingOptions(parse.GetValue(LocalSteps), parse.GetValue(LearningRate));
        return new FederatedJob(ranks, ratios, globalRank, parse.GetValue(Alpha), CommonOptions.ParseTargets(parse.GetValue(Targets)!),
            parse.GetValue(Rounds), perRound, local, parse.GetValue(Batch), parse.GetValue(Context), partition, parse.GetValue(Clients),
            parse.GetValue(Model)!, CommonOptions.ReadData(parse, Data, Test, TestFraction, Labels, Partition, Clients, Context, Seed),
            parse.GetValue(Device)!, parse.GetValue(Seed), parse.GetValue(Output) ?? Paths.DefaultOutput(verb),
            new TaskEvaluationSchedule(parse.GetValue(EvalEvery), parse.GetValue(EvalTokens)))
        {
            Dp = Privacy.Read(parse),
        };
    }
}
