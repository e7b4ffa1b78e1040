using System.Net;
using FedLora.Federation;
using FedLora.Kernels.Cpu;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;
using FedLora.Runtime;

namespace FedLora.Server.Tests;

/// <summary>A tiny federated job, run either in process (the simulation) or over loopback HTTP with real clients.</summary>
internal sealed class NetworkHarness : IDisposable
{
    public static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 1, Channels: 16, Heads: 2);
    public const int Batch = 2, Time = 16, GlobalRank = 4;
    public static readonly JoinOptions FastJoin = new()
    {
        PollInterval = TimeSpan.FromMilliseconds(20),
        MaxPolls = 5_000,
        MaxDuration = TimeSpan.FromSeconds(120),
        MaxRetries = 20,
        RetryDelay = TimeSpan.FromMilliseconds(50),
        MaxRetryDelay = TimeSpan.FromMilliseconds(500),
        AttemptTimeout = TimeSpan.FromSeconds(30),
    };

    /// <summary>Every test client shares 127.0.0.1 and polls every 20 ms: per-address and per-client limits far above that.</summary>
    public static readonly ServerLimits LoopbackLimits = new()
    {
        MaxConnectionsPerAddress = 4096,
        RequestsPerSecondPerAddress = 1_000_000,
        RequestsPerSecondPerClient = 100_000,
    };

    private readonly List<IDisposable> _owned = [];

    public NetworkHarness(string method, int[] ranks, int clientsPerRound = 3, int rounds = 2, int seed = 5, int localSteps = 2)
    {
        Method = method;
        Ranks = ranks;
        Options = new ServerOptions(rounds, clientsPerRound, seed, Batch, Time, new TrainingOptions(Steps: localSteps, LearningRate: 1e-2f))
        {
            RoundDeadline = TimeSpan.FromSeconds(60),
            Limits = LoopbackLimits,
        };
        Tokens = ClientTokens.Issue(ranks.Length);
    }

    public string Method { get; }

    public int[] Ranks { get; }

    public ServerOptions Options { get; set; }

    public string[] Tokens { get; }

    public int ClientCount => Ranks.Length;

    /// <summary>Held-out sets the simulation and the server evaluate the global model on after each round (none by default).</summary>
    public IReadOnlyList<EvaluationSet> Evaluation { get; init; } = [];

    /// <summary>The simulation's round results of the last <see cref="Simulate"/>.</summary>
    public IReadOnlyList<RoundResult> SimulatedRounds { get; private set; } = [];

    public static List<InstructionExample> Examples(int client, int count) =>
        Enumerable.Range(0, count)
            .Select(i => InstructionTemplate.Tokenize(new InstructionRecord($"Name client {client}'s item {i}.", "", $"item {i * (client + 1)}", "open_qa")))
            .ToList();

    public static List<InstructionExample> ClientExamples(int client) => Examples(client, 3 + client % 4);

    public Gpt NewModel()
    {
        var backend = new CpuBackend();
        _owned.Add(backend);
        var model = new Gpt(backend, Config, Batch, Time);
        _owned.Add(model);
        model.InitializeParameters(new Random(42));
        return model;
    }

    public (IFederatedStrategy Strategy, IReadOnlyList<ClientBudget> Budgets) Strategy(Gpt model)
    {
        var modules = model.Layout.LoraModules(LoraTargets.AttentionQkv | LoraTargets.MlpDown);
        var uniform = Method is "fedit" or "ffa-lora";
        var budgets = Method == "fslora"
            ? ClientBudget.FromRatios(Ranks.Select(r => (double)r / GlobalRank).ToArray(), Ranks.Length)
            : ClientBudget.FromRanks(uniform ? Enumerable.Repeat(1, Ranks.Length).ToArray() : Ranks, Ranks.Length);
        var settings = new LoraSettings(uniform ? 1 : GlobalRank, Alpha: 2f * GlobalRank);
        return (StrategyCatalog.Create(Method, modules, settings), budgets);
    }

    /// <summary>The in-process simulation of the same job: its final state, base weights and ledger.</summary>
    public (GlobalState State, float[] Base, CommunicationLedger Ledger) Simulate()
    {
        var model = NewModel();
        var (strategy, budgets) = Strategy(model);
        var clients = Enumerable.Range(0, ClientCount)
            .Select(id =>
            {
                var examples = ClientExamples(id);
                return new FederatedClient(id, examples.Count, budgets[id], seed => new InstructionBatcher(examples, Batch, Time, seed));
            })
            .ToList();
        var simulation = new FederatedSimulation(strategy, model, clients, Evaluation, new SimulationOptions(Options.Rounds, Options.ClientsPerRound, Options.Local, Options.Seed));
        SimulatedRounds = simulation.Run();
        return (simulation.State!, model.Backend.ToArray(model.Parameters), simulation.Ledger);
    }

    /// <summary>The job's round loop without HTTP, on a clock the test controls.</summary>
    public RoundCoordinator Coordinator(ServerOptions options, TimeProvider time)
    {
        var model = NewModel();
        var (strategy, budgets) = Strategy(model);
        return new RoundCoordinator(strategy, model, budgets, options, time);
    }

    /// <summary>A server for the job on 127.0.0.1 and a free port, started.</summary>
    public async Task<FederatedServer> StartServerAsync(ServerOptions? options = null, System.Security.Cryptography.X509Certificates.X509Certificate2? certificate = null, int port = 0)
    {
        var model = NewModel();
        var (strategy, budgets) = Strategy(model);
        var server = new FederatedServer(strategy, model, budgets, new ClientTokens(Tokens), options ?? Options, new ServerEvaluation(Evaluation));
        await server.StartAsync(IPAddress.Loopback, port, certificate);
        return server;
    }

    public HttpClient Http(Uri address, HttpMessageHandler? handler = null)
    {
        var http = handler is null ? new HttpClient() : new HttpClient(handler, disposeHandler: false);
        http.BaseAddress = address;
        http.Timeout = TimeSpan.FromSeconds(60);
        _owned.Add(http);
        return http;
    }

    /// <summary>
    /// Client <paramref name="id"/> joining <paramref name="address"/> on its own CPU backend, holding the job's initial base
    /// weights as every simulated client does (<paramref name="holdsBase"/> false: none, so it downloads the base).
    /// </summary>
    public JoinClient Client(Uri address, int id, HttpMessageHandler? handler = null, JoinOptions? options = null, bool holdsBase = true)
    {
        var backend = new CpuBackend();
        _owned.Add(backend);
        float[]? weights = null;
        if (holdsBase)
        {
            var model = NewModel();
            weights = model.Backend.ToArray(model.Parameters);
        }
        return new JoinClient(Http(address, handler), id, Tokens[id], backend, ClientExamples(id), options ?? FastJoin, weights);
    }

    /// <summary>Runs every client to the end of the job as concurrent tasks, bounded in time.</summary>
    public async Task<JoinResult[]> RunClientsAsync(Uri address, IEnumerable<int>? ids = null, HttpMessageHandler? handler = null, bool holdBase = true)
    {
        var tasks = (ids ?? Enumerable.Range(0, ClientCount)).Select(id => Task.Run(() => Client(address, id, handler, holdsBase: holdBase).RunAsync())).ToArray();
        return await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(180));
    }

    public static float[] BaseOf(FederatedServer server) => server.Coordinator.WithModel((model, _) => model.Backend.ToArray(model.Parameters));

    public static float[][] Flatten(GlobalState state) => state.Adapters.SelectMany(a => new[] { a.A, a.B }).ToArray();

    public void Dispose()
    {
        for (var i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
    }
}
