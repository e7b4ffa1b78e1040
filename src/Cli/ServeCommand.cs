using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using FedLora.Federation;
using FedLora.Federation.Privacy;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Runtime;
using FedLora.Server;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora serve</c>: one federated job over HTTP(S), its clients joining from other machines with <c>fedlora join</c>.</summary>
internal static class ServeCommand
{
    /// <summary>The environment variable that may hold the certificate's password.</summary>
    public const string PasswordVariable = "FEDLORA_CERTIFICATE_PASSWORD";

    public static Command Create()
    {
        var method = new Option<string>("--method")
        {
            Description = $"The federated method: {string.Join(", ", StrategyCatalog.Names)}",
            DefaultValueFactory = _ => "fslora",
        };
        var bind = new Option<string>("--bind") { Description = "The address to listen on (0.0.0.0: every interface)", DefaultValueFactory = _ => "0.0.0.0" };
        var port = new Option<int>("--port") { Description = "The TCP port to listen on", DefaultValueFactory = _ => 8470 };
        var stateDir = new Option<string?>("--state-dir") { Description = "Folder where the job is saved after every round and resumed from on restart (default: OUT/state)" };
        var tokens = new Option<string?>("--tokens") { Description = "File of 'CLIENT_ID TOKEN' lines; created with fresh random tokens if missing (default: OUT/tokens.txt)" };
        var quorum = new Option<int?>("--quorum") { Description = "Updates needed to close a round at its deadline (default: every sampled client)" };
        var deadline = CommonOptions.Positive("--round-deadline", "Seconds a round collects before it may close with the quorum", 600.0);
        var maxUpload = CommonOptions.Positive("--max-upload-mb", "Largest update accepted, in MB", 256);
        var certificate = new Option<string?>("--certificate") { Description = "A PKCS#12 (.pfx) certificate: serve HTTPS with it" };
        var certificatePassword = new Option<string?>("--certificate-password-file")
        {
            Description = $"A file holding the password of --certificate (or set {PasswordVariable}); never on the command line, where `ps` shows it",
        };
        var clipFactor = NonNegative("--clip-factor",
            "Clip each update's change to this x lr x local-steps x sqrt(values trained), about 3x the most AdamW can move them (0: no clip)", 10.0);
        var maxUpdateNorm = new Option<double?>("--max-update-norm") { Description = "Clip each update's change to this L2 norm instead of --clip-factor's bound" };
        var maxExamples = CommonOptions.Positive("--max-examples", "The largest example count a client may report unless the tokens file declares it", 100_000);
        var aggregation = new Option<string>("--aggregation")
        {
            Description = "strategy (the method's own, weighted), median or trimmed-mean (coordinate-wise, unweighted; fedit and ffa-lora only)",
            DefaultValueFactory = _ => "strategy",
        };
        var trim = NonNegative("--trim", "Fraction of values dropped at each end by --aggregation trimmed-mean", 0.1);
        var maxConnections = CommonOptions.Positive("--max-connections", "Open connections in total", new ServerLimits().MaxConnections);
        var perAddress = CommonOptions.Positive("--max-connections-per-address", "Open connections from one IP address", new ServerLimits().MaxConnectionsPerAddress);
        var ratePerAddress = CommonOptions.Positive("--rate-per-address", "Requests per second from one IP address (bursts of 10x)", new ServerLimits().RequestsPerSecondPerAddress);
        var ratePerClient = CommonOptions.Positive("--rate-per-client", "Requests per second of one client token (bursts of 10x)", new ServerLimits().RequestsPerSecondPerClient);
        var options = new FederatedOptions();
        var command = new Command("serve",
            "Run a federated job as an HTTP(S) server: clients on other machines join with `fedlora join`; the job is saved after every round and resumes after a restart")
        {
            method, bind, port, stateDir, tokens, quorum, deadline, maxUpload, certificate, certificatePassword,
            clipFactor, maxUpdateNorm, maxExamples, aggregation, trim, maxConnections, perAddress, ratePerAddress, ratePerClient,
        };
        options.AddTo(command);
        command.SetAction(parse => Verb.Run(() =>
        {
            var name = parse.GetValue(method)!.Trim().ToLowerInvariant();
            if (!StrategyCatalog.Names.Contains(name)) throw new UsageException($"--method '{name}' is unknown: choose one of {string.Join(", ", StrategyCatalog.Names)}");
            var job = options.Read(parse, "serve");
            if (!IPAddress.TryParse(parse.GetValue(bind), out var address)) throw new UsageException($"--bind '{parse.GetValue(bind)}' is not an IP address");
            var listenPort = parse.GetValue(port);
            if (listenPort is < 0 or > 65535) throw new UsageException($"--port {listenPort} must be in [0, 65535]");
            if (parse.GetValue(quorum) is { } q && (q < 1 || q > job.ClientsPerRound))
            {
                throw new UsageException($"--quorum {q} must be in [1, {job.ClientsPerRound}] (--clients-per-round)");
            }
            var rule = parse.GetValue(aggregation)!.Trim().ToLowerInvariant() switch
            {
                "strategy" => AggregationRule.Strategy,
                "median" => AggregationRule.Median,
                "trimmed-mean" => AggregationRule.TrimmedMean,
                var other => throw new UsageException($"--aggregation '{other}' is unknown: choose strategy, median or trimmed-mean"),
            };
            if (rule != AggregationRule.Strategy && !RobustAggregation.Supports(name))
            {
                throw new UsageException($"--aggregation {parse.GetValue(aggregation)} is for fedit and ffa-lora (every client trains the global rank), not {name}");
            }
            using var cert = LoadCertificate(parse.GetValue(certificate), parse.GetValue(certificatePassword));
            Directory.CreateDirectory(job.Output);
            var tokenFile = parse.GetValue(tokens) ?? Path.Combine(job.Output, "tokens.txt");
            var (clientTokens, declared) = ReadOrIssueTokens(tokenFile, job.ClientCount);
            var serverOptions = new ServerOptions(job.Rounds, job.ClientsPerRound, job.Seed, job.Batch, job.Context, job.Local)
            {
                Quorum = parse.GetValue(quorum),
                RoundDeadline = TimeSpan.FromSeconds(parse.GetValue(deadline)),
                MaxUploadBytes = parse.GetValue(maxUpload) * 1024L * 1024,
                StateDirectory = parse.GetValue(stateDir) ?? Path.Combine(job.Output, "state"),
                UpdateNormFactor = parse.GetValue(clipFactor),
                MaxUpdateNorm = parse.GetValue(maxUpdateNorm),
                MaxExampleCount = parse.GetValue(maxExamples),
                DeclaredExampleCounts = declared.Any(n => n is not null) ? declared : null,
                Aggregation = rule,
                TrimFraction = parse.GetValue(trim),
                Privacy = job.Dp,
                ConsoleLog = true,
                Limits = new ServerLimits
                {
                    MaxConnections = parse.GetValue(maxConnections),
                    MaxConnectionsPerAddress = parse.GetValue(perAddress),
                    RequestsPerSecondPerAddress = parse.GetValue(ratePerAddress),
                    RequestsPerSecondPerClient = parse.GetValue(ratePerClient),
                },
            };
            using var backend = CommonOptions.CreateBackend(job.Device);
            using var model = CommonOptions.LoadModel(job.ModelPath, backend, job.Batch, job.Context);
            // The server evaluates the global model after each round on the test set it holds (--test, the data folder's
            // global_test.json, or --test-fraction of the records): GET /v1/metrics serves the history.
            var tokenizer = CommonOptions.LoadTokenizer(job.ModelPath);
            var data = InstructionData.Load(job.Data, tokenizer);
            var schedule = job.Evaluation;
            var evaluation = new ServerEvaluation(data.EvaluationSets(job.Batch, job.Context))
            {
                // --eval-every N: the task metrics over the whole test set every N rounds and after the last.
                TaskMetrics = !schedule.Enabled ? null : (global, round) => !schedule.IsDue(round + 1, job.Rounds) ? null
                    : TaskMetrics.Measure(round + 1, global, tokenizer, data, job.Batch, job.Context, schedule).Results
                        .Where(r => r.Category == Model.Evaluation.TaskMetric.All).ToDictionary(r => r.Metric, r => r.Value),
            };
            var (settings, budgets) = job.BudgetsFor(name);
            IFederatedStrategy strategy;
            try
            {
                strategy = StrategyCatalog.Create(name, model.Layout.LoraModules(job.Targets), settings);
                serverOptions.Validate(budgets.Count);
                if (job.Dp is not null) PrivateAggregation.RequireSupport(strategy);
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException)
            {
                throw new UsageException($"{name}: {e.Message}");
            }
            return RunAsync(strategy, model, budgets, clientTokens, serverOptions, evaluation, address, listenPort, cert, job.Output, job.ModelPath).GetAwaiter().GetResult();
        }));
        return command;
    }

    private static async Task<int> RunAsync(IFederatedStrategy strategy, Gpt model, IReadOnlyList<ClientBudget> budgets, ClientTokens tokens,
        ServerOptions options, ServerEvaluation evaluation, IPAddress address, int port, X509Certificate2? certificate, string output, string baseModel)
    {
        await using var server = new FederatedServer(strategy, model, budgets, tokens, options, evaluation);
        server.Coordinator.RoundCompleted += round =>
        {
            var metrics = server.Coordinator.MetricsHistory[^1];
            var loss = metrics.Loss.TryGetValue("all", out var all) ? $"held-out {all:0.0000}, " : "";
            loss += string.Concat((metrics.Task ?? new Dictionary<string, double>()).Select(m => $"{m.Key} {m.Value:0.000}, "));
            var privacy = options.Privacy is null ? "" : $", epsilon {DpOptions.Format(metrics.Epsilon ?? double.PositiveInfinity)}";
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                $"  round {round + 1}/{options.Rounds}: {loss}{metrics.Updates} updates, down {CommonOptions.Megabytes(metrics.DownloadBytes)} MB, up {CommonOptions.Megabytes(metrics.UploadBytes)} MB{privacy}; saved to {options.StateDirectory}");
        };
        var uri = await server.StartAsync(address, port, certificate).ConfigureAwait(false);
        // SIGTERM and Ctrl+C stop the host (its console lifetime); ShutdownRequested follows.
        var stop = server.ShutdownRequested;
        var resumed = server.Coordinator.State.Round;
        var where = resumed >= options.Rounds
            ? $" (the job in {options.StateDirectory} is already finished: {options.Rounds} of {options.Rounds} rounds)"
            : resumed > 0 ? $" (resuming at round {resumed + 1} of {options.Rounds})" : "";
        AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
            $"serve: {strategy.Name}, {budgets.Count} clients, {options.ClientsPerRound} per round, {options.Rounds} rounds{where}, listening on {uri}; log: {Path.Combine(options.StateDirectory!, FederatedServer.LogFile)}");
        var finished = await Task.WhenAny(server.Finished, Task.Delay(Timeout.Infinite, stop)).ConfigureAwait(false) == server.Finished;
        if (!finished)
        {
            await server.StopAsync().ConfigureAwait(false);
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                $"stopped in round {server.Coordinator.State.Round + 1} with its {server.Coordinator.AcceptedCount} accepted updates kept; run the same command again to resume from {options.StateDirectory}");
            return 0;
        }
        var saved = SaveGlobal(server, output, baseModel);
        AnsiConsole.MarkupLine("telling the clients the job is over (up to 60 s)");
        try
        {
            await server.LingerAsync(TimeSpan.FromSeconds(60), stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // SIGTERM or Ctrl+C: the job is saved already.
        }
        AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
            $"done: {options.Rounds} rounds, down {CommonOptions.Megabytes(server.Coordinator.Ledger.TotalDownload())} MB, up {CommonOptions.Megabytes(server.Coordinator.Ledger.TotalUpload())} MB; global model: {saved}");
        return 0;
    }

    /// <summary>Saves the global model: its adapters as a peft folder, or for FLoRA the merged base weights.</summary>
    private static string SaveGlobal(FederatedServer server, string folder, string baseModel)
    {
        var state = server.Coordinator.State;
        return server.Coordinator.WithModel((model, _) =>
        {
            if (state.Rank == 0)
            {
                var path = Path.Combine(folder, "model.safetensors");
                GptCheckpoint.Save(model, path);
                StateStore.MakeOwnerOnly(path);
                return path;
            }
            using var adapters = GlobalModel.Adapters(model, state)!;
            var adapterPath = Path.Combine(folder, "adapter");
            StateStore.CreateOwnerOnly(adapterPath);
            PeftAdapter.Save(adapters, adapterPath, baseModel);
            foreach (var file in Directory.EnumerateFiles(adapterPath)) StateStore.MakeOwnerOnly(file);
            return adapterPath;
        });
    }

    private static (ClientTokens Tokens, int?[] Declared) ReadOrIssueTokens(string path, int clientCount)
    {
        string[] tokens;
        int?[] declared;
        if (File.Exists(path))
        {
            try
            {
                (tokens, declared) = ClientTokens.ReadEntries(path);
            }
            catch (FormatException e)
            {
                throw new UsageException($"--tokens: {e.Message}");
            }
            if (tokens.Length != clientCount) throw new UsageException($"--tokens {path} holds {tokens.Length} tokens for {clientCount} clients: give exactly one per client");
            var weak = Enumerable.Range(0, tokens.Length).Where(i => ClientTokens.IsWeak(tokens[i])).ToArray();
            if (weak.Length > 0)
            {
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                    $"[yellow]warning:[/] the tokens of clients {string.Join(", ", weak)} in {path} are guessable (under 32 characters or few distinct ones); delete the file to have strong ones issued");
            }
        }
        else
        {
            tokens = ClientTokens.Issue(clientCount);
            declared = new int?[clientCount];
            ClientTokens.WriteFile(path, tokens);
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"issued {clientCount} client tokens to {path}: give client i only its own line (the server keeps only their SHA-256)");
        }
        try
        {
            return (new ClientTokens(tokens), declared);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--tokens {path}: {e.Message}");
        }
    }

    private static Option<double> NonNegative(string name, string description, double defaultValue)
    {
        var option = new Option<double>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<double>();
            if (!(value >= 0) || !double.IsFinite(value)) result.AddError($"{name} must be >= 0, got {value}");
        });
        return option;
    }

    /// <summary>The certificate password: from the file, else from the environment variable, else none.</summary>
    private static string? ReadPassword(string? file)
    {
        if (file is not null)
        {
            Paths.RequireFile(file, "certificate password file", "Pass --certificate-password-file with a file holding only the password.");
            return File.ReadAllText(file).TrimEnd('\r', '\n');
        }
        return Environment.GetEnvironmentVariable(PasswordVariable);
    }

    private static X509Certificate2? LoadCertificate(string? path, string? passwordFile)
    {
        if (path is null)
        {
            if (passwordFile is not null) throw new UsageException("--certificate-password-file needs --certificate");
            return null;
        }
        var password = ReadPassword(passwordFile);
        Paths.RequireFile(path, "certificate", "Pass --certificate with a PKCS#12 (.pfx) file holding the certificate and its private key.");
        try
        {
            return X509CertificateLoader.LoadPkcs12FromFile(path, password);
        }
        catch (CryptographicException e)
        {
            throw new UsageException($"--certificate {path}: {e.Message} (wrong password in --certificate-password-file or {PasswordVariable}?)");
        }
    }
}
