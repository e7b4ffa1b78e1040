using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using FedLora.Federation;
using FedLora.Federation.Networking;
using FedLora.Lora;
using FedLora.Model;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora serve</c>: one federated job over HTTP(S), its clients joining from other machines with <c>fedlora join</c>.</summary>
internal static class ServeCommand
{
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
        var certificatePassword = new Option<string?>("--certificate-password") { Description = "The password of --certificate" };
        var options = new FederatedOptions();
        var command = new Command("serve",
            "Run a federated job as an HTTP(S) server: clients on other machines join with `fedlora join`; the job is saved after every round and resumes after a restart")
        {
            method, bind, port, stateDir, tokens, quorum, deadline, maxUpload, certificate, certificatePassword,
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
            using var cert = LoadCertificate(parse.GetValue(certificate), parse.GetValue(certificatePassword));
            Directory.CreateDirectory(job.Output);
            var tokenFile = parse.GetValue(tokens) ?? Path.Combine(job.Output, "tokens.txt");
            var clientTokens = ReadOrIssueTokens(tokenFile, job.ClientCount);
            var serverOptions = new ServerOptions(job.Rounds, job.ClientsPerRound, job.Seed, job.Batch, job.Context, job.Local)
            {
                Quorum = parse.GetValue(quorum),
                RoundDeadline = TimeSpan.FromSeconds(parse.GetValue(deadline)),
                MaxUploadBytes = parse.GetValue(maxUpload) * 1024L * 1024,
                StateDirectory = parse.GetValue(stateDir) ?? Path.Combine(job.Output, "state"),
            };
            using var backend = CommonOptions.CreateBackend(job.Device);
            using var model = CommonOptions.LoadModel(job.ModelPath, backend, job.Batch, job.Context);
            var (settings, budgets) = job.BudgetsFor(name, job.ClientCount);
            IFederatedStrategy strategy;
            try
            {
                strategy = StrategyCatalog.Create(name, model.Layout.LoraModules(job.Targets), settings);
                serverOptions.Validate(budgets.Count);
            }
            catch (ArgumentException e)
            {
                throw new UsageException($"{name}: {e.Message}");
            }
            return RunAsync(strategy, model, budgets, clientTokens, serverOptions, address, listenPort, cert, job.Output, job.ModelPath).GetAwaiter().GetResult();
        }));
        return command;
    }

    private static async Task<int> RunAsync(IFederatedStrategy strategy, Gpt model, IReadOnlyList<ClientBudget> budgets, ClientTokens tokens,
        ServerOptions options, IPAddress address, int port, X509Certificate2? certificate, string output, string baseModel)
    {
        await using var server = new FederatedServer(strategy, model, budgets, tokens, options);
        server.Coordinator.RoundCompleted += round =>
        {
            var entries = server.Coordinator.Ledger.Entries.Where(e => e.Round == round).ToArray();
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                $"  round {round + 1}/{options.Rounds}: {entries.Count(e => e.UploadBytes > 0)} updates, down {CommonOptions.Megabytes(entries.Sum(e => e.DownloadBytes))} MB, up {CommonOptions.Megabytes(entries.Sum(e => e.UploadBytes))} MB; saved to {options.StateDirectory}");
        };
        using var stop = new CtrlC();
        var uri = await server.StartAsync(address, port, certificate).ConfigureAwait(false);
        var resumed = server.Coordinator.State.Round;
        AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
            $"serve: {strategy.Name}, {budgets.Count} clients, {options.ClientsPerRound} per round, {options.Rounds} rounds{(resumed > 0 ? $" (resuming at round {resumed + 1})" : "")}, listening on {uri}; waiting for every client to enroll");
        var finished = await Task.WhenAny(server.Finished, Task.Delay(Timeout.Infinite, stop.Token)).ConfigureAwait(false) == server.Finished;
        if (!finished)
        {
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"stopped at round {server.Coordinator.State.Round + 1}; run the same command again to resume from {options.StateDirectory}");
            return 130;
        }
        var saved = SaveGlobal(server, output, baseModel);
        AnsiConsole.MarkupLine("telling the clients the job is over (up to 60 s)");
        try
        {
            await server.LingerAsync(TimeSpan.FromSeconds(60), stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Ctrl+C: the job is saved already.
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
                return path;
            }
            using var adapters = GlobalModel.Adapters(model, state)!;
            var adapterPath = Path.Combine(folder, "adapter");
            PeftAdapter.Save(adapters, adapterPath, baseModel);
            return adapterPath;
        });
    }

    private static ClientTokens ReadOrIssueTokens(string path, int clientCount)
    {
        string[] tokens;
        if (File.Exists(path))
        {
            try
            {
                tokens = ClientTokens.ReadFile(path);
            }
            catch (FormatException e)
            {
                throw new UsageException($"--tokens: {e.Message}");
            }
            if (tokens.Length != clientCount) throw new UsageException($"--tokens {path} holds {tokens.Length} tokens for {clientCount} clients: give exactly one per client");
        }
        else
        {
            tokens = ClientTokens.Issue(clientCount);
            ClientTokens.WriteFile(path, tokens);
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"issued {clientCount} client tokens to {path}: give client i only its own line (the server keeps only their SHA-256)");
        }
        try
        {
            return new ClientTokens(tokens);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--tokens {path}: {e.Message}");
        }
    }

    private static X509Certificate2? LoadCertificate(string? path, string? password)
    {
        if (path is null)
        {
            if (password is not null) throw new UsageException("--certificate-password needs --certificate");
            return null;
        }
        Paths.RequireFile(path, "certificate", "Pass --certificate with a PKCS#12 (.pfx) file holding the certificate and its private key.");
        try
        {
            return X509CertificateLoader.LoadPkcs12FromFile(path, password);
        }
        catch (CryptographicException e)
        {
            throw new UsageException($"--certificate {path}: {e.Message} (wrong --certificate-password?)");
        }
    }
}
