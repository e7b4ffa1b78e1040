using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using FedLora.Federation;
using FedLora.Kernels.Cpu;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;
using FedLora.Runtime;
using FedLora.Server;

// The chaos and load driver of bench/chaos (see its README): a server on a tiny model, its clients, and attackers,
// as separate processes on loopback, so a script can kill -9, SIGTERM, flood and measure them. Every loop is bounded.
var arguments = Args.Parse(args);
return arguments.Verb switch
{
    "serve" => await Chaos.ServeAsync(arguments),
    "clients" => await Chaos.ClientsAsync(arguments),
    "flood" => await Chaos.FloodAsync(arguments),
    "abuse" => await Chaos.AbuseAsync(arguments),
    _ => Args.Usage(),
};

internal sealed record Args(string Verb, Dictionary<string, string> Options)
{
    public static Args Parse(string[] args)
    {
        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 1; i + 1 < args.Length; i += 2) options[args[i].TrimStart('-')] = args[i + 1];
        return new Args(args.Length > 0 ? args[0] : "", options);
    }

    public static int Usage()
    {
        Console.Error.WriteLine("""
            usage: FedLora.Chaos serve   --state DIR --port P [--method fslora] [--clients 6] [--per-round 3] [--rounds 6] [--per-address 64] [--poison-client -1]
                   FedLora.Chaos clients --server URL [--clients 6] [--ids 0-5] [--poison-client -1] [--method fslora]
                   FedLora.Chaos flood   --server URL --connections N [--hold-seconds 10] [--clients 6]
                   FedLora.Chaos abuse   --server URL [--clients 6]
            """);
        return 2;
    }

    public string Get(string name, string fallback) => Options.TryGetValue(name, out var value) ? value : fallback;

    public int Int(string name, int fallback) => int.Parse(Get(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
}

internal static class Chaos
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 1, Channels: 16, Heads: 2);
    private const int Batch = 2, Time = 16, GlobalRank = 4, Seed = 5;
    private static readonly TrainingOptions Local = new(Steps: 2, LearningRate: 1e-2f);

    /// <summary>Client i's token: derived, so that the server and the client processes agree without a file.</summary>
    private static string Token(int id) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes($"fedlora-chaos-client-{id}")));

    private static int Rank(int id) => id % 4 + 1;

    private static List<InstructionExample> Examples(int client) =>
        Enumerable.Range(0, 3 + client % 4)
            .Select(i => InstructionTemplate.Tokenize(new InstructionRecord($"Name client {client}'s item {i}.", "", $"item {i * (client + 1)}", "open_qa")))
            .ToList();

    private static (IFederatedStrategy, IReadOnlyList<ClientBudget>) Strategy(string method, Gpt model, int clients)
    {
        var modules = model.Layout.LoraModules(LoraTargets.AttentionQkv | LoraTargets.MlpDown);
        var uniform = method is "fedit" or "ffa-lora";
        var ranks = Enumerable.Range(0, clients).Select(id => uniform ? 1 : Rank(id)).ToArray();
        var budgets = method == "fslora"
            ? ClientBudget.FromRatios(ranks.Select(r => (double)r / GlobalRank).ToArray(), clients)
            : ClientBudget.FromRanks(ranks, clients);
        return (StrategyCatalog.Create(method, modules, new LoraSettings(uniform ? 1 : GlobalRank, Alpha: 2f * GlobalRank)), budgets);
    }

    /// <summary>Runs the job; prints "digest HEX" (SHA-256 of the final global state and base) when it finishes, exits 0 on SIGTERM too.</summary>
    public static async Task<int> ServeAsync(Args a)
    {
        var clients = a.Int("clients", 6);
        var method = a.Get("method", "fslora");
        using var backend = new CpuBackend();
        using var model = new Gpt(backend, Config, Batch, Time);
        model.InitializeParameters(new Random(42));
        var (strategy, budgets) = Strategy(method, model, clients);
        var options = new ServerOptions(a.Int("rounds", 6), a.Int("per-round", 3), Seed, Batch, Time, Local)
        {
            StateDirectory = a.Get("state", "chaos-state"),
            RoundDeadline = TimeSpan.FromSeconds(a.Int("deadline", 600)),
            Limits = new ServerLimits
            {
                MaxConnections = a.Int("max-connections", new ServerLimits().MaxConnections),
                MaxConnectionsPerAddress = a.Int("per-address", new ServerLimits().MaxConnectionsPerAddress),
                RequestsPerSecondPerAddress = a.Int("rate-per-address", 100_000),
                RequestsPerSecondPerClient = a.Int("rate-per-client", 1000),
            },
        };
        await using var server = new FederatedServer(strategy, model, budgets, new ClientTokens(Enumerable.Range(0, clients).Select(Token).ToArray()), options);
        var watch = new Stopwatch();
        server.Coordinator.RoundCompleted += round => Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round} closed at {watch.Elapsed.TotalSeconds:F2} s"));
        var uri = await server.StartAsync(IPAddress.Loopback, a.Int("port", 0));
        watch.Start();
        Console.WriteLine($"listening {uri} resumed-at {server.Coordinator.State.Round}");
        var done = await Task.WhenAny(server.Finished, Task.Delay(Timeout.Infinite, server.ShutdownRequested).ContinueWith(_ => { }, TaskScheduler.Default)) == server.Finished;
        if (done)
        {
            var state = server.Coordinator.State;
            var finite = state.Adapters.All(x => x.A.All(float.IsFinite) && x.B.All(float.IsFinite));
            var digest = server.Coordinator.WithModel((m, _) =>
            {
                using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                foreach (var adapter in state.Adapters)
                {
                    sha.AppendData(MemoryMarshalBytes(adapter.A));
                    sha.AppendData(MemoryMarshalBytes(adapter.B));
                }
                sha.AppendData(MemoryMarshalBytes(m.Backend.ToArray(m.Parameters)));
                return Convert.ToHexString(sha.GetHashAndReset());
            });
            Console.WriteLine($"finished rounds {state.Round} finite {finite} updates {server.Coordinator.Ledger.Entries.Count(e => e.UploadBytes > 0)}");
            Console.WriteLine($"digest {digest}");
            await server.LingerAsync(TimeSpan.FromSeconds(a.Int("linger", 10)));
        }
        await server.StopAsync();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"peak-rss-mb {PeakRssMegabytes():F1} {(done ? "finished" : "stopped")}"));
        return 0;
    }

    private static byte[] MemoryMarshalBytes(float[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return bytes;
    }

    /// <summary>VmHWM of this process (Linux), else the working-set peak.</summary>
    public static double PeakRssMegabytes()
    {
        const string Status = "/proc/self/status";
        if (File.Exists(Status))
        {
            var line = File.ReadLines(Status).FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            if (line is not null) return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
        }
        return Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;
    }

    /// <summary>Clients --ids (a-b) of the job, as concurrent JoinClients that retry through server restarts (bounded: 2 hours, 400 retries a request).</summary>
    public static async Task<int> ClientsAsync(Args a)
    {
        var server = new Uri(a.Get("server", "http://127.0.0.1:8470/"));
        var clients = a.Int("clients", 6);
        var range = a.Get("ids", $"0-{clients - 1}").Split('-').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var poison = a.Int("poison-client", -1);
        var options = new JoinOptions
        {
            PollInterval = TimeSpan.FromMilliseconds(a.Int("poll-ms", 100)),
            MaxPolls = 200_000,
            MaxDuration = TimeSpan.FromHours(2),
            MaxRetries = 400,
            RetryDelay = TimeSpan.FromMilliseconds(100),
            MaxRetryDelay = TimeSpan.FromSeconds(2),
            AttemptTimeout = TimeSpan.FromSeconds(120),
        };
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = int.MaxValue };
        var watch = Stopwatch.StartNew();
        var tasks = Enumerable.Range(range[0], range[1] - range[0] + 1).Select(id => Task.Run(async () =>
        {
            using var http = new HttpClient(handler, disposeHandler: false) { BaseAddress = server, Timeout = Timeout.InfiniteTimeSpan };
            if (id == poison) return await PoisonAsync(http, id, options);
            using var backend = new CpuBackend();
            var result = await new JoinClient(http, id, Token(id), backend, Examples(id), options).RunAsync();
            return result.RoundsTrained;
        })).ToArray();
        var trained = await Task.WhenAll(tasks);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"clients {tasks.Length} trained {trained.Sum()} rounds in {watch.Elapsed.TotalSeconds:F2} s"));
        return 0;
    }

    /// <summary>A sampled client that sends 1e20 in every value instead of training.</summary>
    private static async Task<int> PoisonAsync(HttpClient http, int id, JoinOptions options)
    {
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token(id));
        using (var enrolled = await http.PostAsync(new Uri($"v1/clients/{id}/enroll", UriKind.Relative), System.Net.Http.Json.JsonContent.Create(new EnrollRequest(3))))
        {
            enrolled.EnsureSuccessStatusCode();
        }
        var sent = 0;
        for (var poll = 0; poll < options.MaxPolls; poll++)
        {
            using var response = await http.GetAsync(new Uri($"v1/clients/{id}/assignment", UriKind.Relative));
            if (response.StatusCode == HttpStatusCode.Gone) return sent;
            if (response.StatusCode != HttpStatusCode.OK)
            {
                await Task.Delay(options.PollInterval);
                continue;
            }
            var assignment = AssignmentCodec.Decode(await response.Content.ReadAsByteArrayAsync());
            var writer = new FedLora.Lora.Safetensors.SafetensorsWriter();
            for (var m = 0; m < assignment.Modules.Count; m++)
            {
                var (module, start) = (assignment.Modules[m], assignment.Start[m]);
                if (assignment.Trainable == TrainableFactors.Both) writer.AddFloats($"{module.Name}.lora_A.weight", Enumerable.Repeat(1e20f, start.A.Length).ToArray(), assignment.Rank, module.InFeatures);
                writer.AddFloats($"{module.Name}.lora_B.weight", Enumerable.Repeat(1e20f, start.B.Length).ToArray(), module.OutFeatures, assignment.Rank);
                if (assignment.RankIndices is { } indices) writer.AddInt32s($"{module.Name}.lora_rank_indices", indices[m], assignment.Rank);
            }
            using var reply = await http.PostAsync(new Uri($"v1/clients/{id}/rounds/{assignment.Round}/update", UriKind.Relative), new ByteArrayContent(writer.ToArray()));
            Console.WriteLine($"poison client {id}: round {assignment.Round} -> {(int)reply.StatusCode}");
            sent++;
        }
        return sent;
    }

    /// <summary>
    /// Opens up to --connections idle TCP connections (no byte sent) from 127.0.0.x source addresses, 50 per address,
    /// holds them, then checks that the server still answers. Exit 0 if it does.
    /// </summary>
    public static async Task<int> FloodAsync(Args a)
    {
        var server = new Uri(a.Get("server", "http://127.0.0.1:8470/"));
        var count = a.Int("connections", 1000);
        var sockets = new List<Socket>();
        var failed = 0;
        try
        {
            for (var i = 0; i < count; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    socket.Bind(new IPEndPoint(new IPAddress([127, 0, (byte)(1 + i / 50 / 250), (byte)(1 + i / 50 % 250)]), 0));
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                    await socket.ConnectAsync(server.Host, server.Port, timeout.Token);
                    sockets.Add(socket);
                }
                catch (Exception e) when (e is SocketException or OperationCanceledException)
                {
                    socket.Dispose();
                    failed++;
                    if (e is SocketException { SocketErrorCode: SocketError.TooManyOpenSockets }) break;
                }
            }
            Console.WriteLine($"flood: {sockets.Count} idle connections open ({failed} failed to connect)");
            await Task.Delay(TimeSpan.FromSeconds(a.Int("hold-seconds", 10)));
            var stillOpen = sockets.Count(s => !(s.Poll(0, SelectMode.SelectRead) && s.Available == 0));
            Console.WriteLine($"flood: {stillOpen} of them still open after the hold");
        }
        finally
        {
            foreach (var socket in sockets) socket.Dispose();
        }
        return await AnswersAsync(server, a.Int("clients", 6)) ? 0 : 1;
    }

    private static async Task<bool> AnswersAsync(Uri server, int clients)
    {
        for (var attempt = 0; attempt < 30; attempt++)
        {
            try
            {
                using var http = new HttpClient { BaseAddress = server, Timeout = TimeSpan.FromSeconds(10) };
                http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token(clients - 1));
                using var status = await http.GetAsync(new Uri("v1/status", UriKind.Relative));
                Console.WriteLine($"status after the attack: {(int)status.StatusCode}");
                return status.IsSuccessStatusCode;
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
            {
                // A flood leaves the server's accept queue full of dead connections for a moment.
                Console.WriteLine($"status after the attack: not yet ({e.GetType().Name}: {e.Message})");
                await Task.Delay(500);
            }
        }
        return false;
    }

    /// <summary>Oversized and amplified payloads: 8 parallel 250 MB uploads announced by a non-sampled client, a 35 MB header, 8 anonymous 200 MB enrollments. Exit 0 if each is refused.</summary>
    public static async Task<int> AbuseAsync(Args a)
    {
        var server = new Uri(a.Get("server", "http://127.0.0.1:8470/"));
        var clients = a.Int("clients", 6);
        var attacks = new List<Task<string>>();
        for (var i = 0; i < 8; i++)
        {
            attacks.Add(Raw(server, $"POST /v1/clients/{clients - 1}/rounds/0/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {Token(clients - 1)}\r\nContent-Length: 262144000\r\n\r\n", 262_144_000));
            attacks.Add(Raw(server, "POST /v1/clients/0/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n", 209_715_200));
        }
        var header = new byte[35 * 1024 * 1024];
        BitConverter.TryWriteBytes(header, (ulong)(header.Length - 8));
        attacks.Add(Raw(server, $"POST /v1/clients/0/rounds/0/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {Token(0)}\r\nContent-Length: {header.Length}\r\n\r\n", header.Length));
        var replies = await Task.WhenAll(attacks);
        foreach (var group in replies.GroupBy(r => r)) Console.WriteLine($"abuse: {group.Count()} x '{group.Key}'");
        var refused = replies.All(r => r.Contains(" 401", StringComparison.Ordinal) || r.Contains(" 403", StringComparison.Ordinal)
            || r.Contains(" 409", StringComparison.Ordinal) || r.Contains(" 413", StringComparison.Ordinal) || r.Contains(" 429", StringComparison.Ordinal));
        return refused && await AnswersAsync(server, clients) ? 0 : 1;
    }

    /// <summary>Sends the head, then body bytes (zeros) until the server answers or the body is sent; returns the status line.</summary>
    private static async Task<string> Raw(Uri server, string head, long bodyBytes)
    {
        using var socket = new TcpClient();
        await socket.ConnectAsync(server.Host, server.Port);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
        var chunk = new byte[1 << 20];
        var reply = new byte[512];
        var pending = stream.ReadAsync(reply).AsTask();
        long sent = 0;
        try
        {
            while (sent < bodyBytes && !pending.IsCompleted)
            {
                var n = (int)Math.Min(chunk.Length, bodyBytes - sent);
                await stream.WriteAsync(chunk.AsMemory(0, n));
                sent += n;
            }
        }
        catch (IOException)
        {
            // The server closed the connection after answering.
        }
        var read = await pending.WaitAsync(TimeSpan.FromSeconds(60));
        var line = Encoding.ASCII.GetString(reply, 0, read).Split('\n')[0].Trim();
        return string.Create(CultureInfo.InvariantCulture, $"{line} after {sent / 1048576} MB of body");
    }
}
