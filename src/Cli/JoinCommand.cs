using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using FedLora.Server;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora join</c>: one client of a job that <c>fedlora serve</c> runs, training on its own Dolly shard.</summary>
internal static class JoinCommand
{
    public static Command Create()
    {
        var server = new Option<string>("--server") { Description = "The server's URL, e.g. http://10.0.0.5:8470 or https://fl.example.org:8470", Required = true };
        var clientId = new Option<int>("--client-id") { Description = "This client's id (0-based), as in the operator's token file", Required = true };
        var token = new Option<string?>("--token") { Description = "This client's bearer token (or --token-file)" };
        var tokenFile = new Option<string?>("--token-file") { Description = "A file holding this client's token (safer than --token, which other users may see)" };
        var trust = new Option<string?>("--trust-certificate") { Description = "Trust exactly this server certificate (PEM or DER), e.g. the operator's self-signed one" };
        var partition = new Option<string>("--partition") { Description = "The job's data split (as given to serve): natural, iid or dirichlet:ALPHA", DefaultValueFactory = _ => "natural" };
        var clients = CommonOptions.Positive("--clients", "Clients of iid / dirichlet partitions (as given to serve)", 10);
        var poll = CommonOptions.Positive("--poll-seconds", "Seconds between two polls for an assignment", 2.0);
        var maxHours = CommonOptions.Positive("--max-hours", "Give up after this many hours", 72.0);
        var data = CommonOptions.Data();
        var test = CommonOptions.Test();
        var testFraction = CommonOptions.TestFraction();
        var labels = CommonOptions.Labels();
        var context = CommonOptions.Positive("--context", "Tokens per example window (as given to serve; it shapes speaker partitions)", 128);
        var model = CommonOptions.BaseModel();
        model.Description = "The model the server runs (a Hugging Face GPT-2 folder, or the default shipped model): its tokenizer, and its weights, so that the client starts without downloading the base";
        var device = CommonOptions.Device();
        var seed = CommonOptions.Seed();
        var command = new Command("join",
            "Join a federated job run by `fedlora serve`: enroll, then train on this client's own shard whenever the server samples it, until the job ends; safe to stop and restart")
        {
            server, clientId, token, tokenFile, trust, data, test, testFraction, labels, context, model, partition, clients, seed, device, poll, maxHours,
        };
        command.SetAction(parse => Verb.Run(() =>
        {
            if (!Uri.TryCreate(parse.GetValue(server), UriKind.Absolute, out var address) || address.Scheme is not ("http" or "https"))
            {
                throw new UsageException($"--server '{parse.GetValue(server)}' must be an http:// or https:// URL");
            }
            var id = parse.GetValue(clientId);
            var secret = ReadToken(parse.GetValue(token), parse.GetValue(tokenFile));
            // The same request as the server's: the same records held out as its test set, the same split into shards.
            var shards = InstructionData.Load(CommonOptions.ReadData(parse, data, test, testFraction, labels, partition, clients, context, seed),
                CommonOptions.LoadTokenizer(parse.GetValue(model)!));
            if (id < 0 || id >= shards.Clients.Count) throw new UsageException($"--client-id {id} must be in [0, {shards.Clients.Count - 1}] for this partition");
            using var pinned = LoadCertificate(parse.GetValue(trust));
            using var handler = new SocketsHttpHandler();
            if (pinned is not null)
            {
                handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) =>
                    presented is not null && presented.GetCertHashString() == pinned.GetCertHashString();
            }
            using var http = new HttpClient(handler) { BaseAddress = address, Timeout = Timeout.InfiniteTimeSpan };
            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!);
            var options = new JoinOptions
            {
                PollInterval = TimeSpan.FromSeconds(parse.GetValue(poll)),
                MaxDuration = TimeSpan.FromHours(parse.GetValue(maxHours)),
            };
            float[] baseWeights;
            using (var own = CommonOptions.LoadModel(parse.GetValue(model)!, backend, batch: 1, context: 1))
            {
                baseWeights = own.Backend.ToArray(own.Parameters);
            }
            var client = new JoinClient(http, id, secret, backend, shards.Clients[id], options, baseWeights);
            client.Log += message => AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"  {message}");
            using var stop = new CtrlC();
            try
            {
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                    $"join: client {id} ({shards.Clients[id].Count:N0} examples) -> {address}, on {backend.Description}");
                var result = client.RunAsync(stop.Token).GetAwaiter().GetResult();
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                    $"job finished: trained {result.RoundsTrained} rounds ({result.LateRounds} late), down {CommonOptions.Megabytes(result.BytesDownloaded)} MB, up {CommonOptions.Megabytes(result.BytesUploaded)} MB");
                return 0;
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("stopped; run the same command again to rejoin");
                return 130;
            }
            catch (Exception e) when (e is JoinRefusedException or HttpRequestException or TimeoutException)
            {
                throw new UsageException(e.Message);
            }
        }));
        return command;
    }

    private static string ReadToken(string? token, string? file)
    {
        if ((token is null) == (file is null)) throw new UsageException("give exactly one of --token and --token-file");
        if (token is not null) return token;
        Paths.RequireFile(file!, "token file", "Pass --token-file with the file holding this client's token.");
        var text = File.ReadAllText(file!).Trim();
        var parts = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        // Accept either the bare token or the operator's "ID TOKEN" line.
        return parts.Length switch
        {
            1 => parts[0],
            2 => parts[1],
            _ => throw new UsageException($"--token-file {file} must hold the token (or one 'CLIENT_ID TOKEN' line)"),
        };
    }

    private static X509Certificate2? LoadCertificate(string? path)
    {
        if (path is null) return null;
        Paths.RequireFile(path, "certificate", "Pass --trust-certificate with the server's certificate (PEM or DER).");
        try
        {
            return X509CertificateLoader.LoadCertificateFromFile(path);
        }
        catch (CryptographicException e)
        {
            throw new UsageException($"--trust-certificate {path}: {e.Message}");
        }
    }
}
