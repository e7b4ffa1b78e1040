using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Threading.RateLimiting;
using FedLora.Federation;
using FedLora.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FedLora.Server;

/// <summary>
/// Runs one federated job over HTTP (Kestrel), version 1 of the API. Every call carries the client's
/// bearer token, which must be that client's:
/// <list type="bullet">
/// <item><c>POST /v1/clients/{id}/enroll</c> with <c>{"exampleCount": n}</c>: records n_k, answers the <see cref="JobDescription"/>;</item>
/// <item><c>GET /v1/clients/{id}/assignment</c>: 200 and the assignment payload (safetensors) when sampled, 204 to wait, 410 when the job is over;</item>
/// <item><c>POST /v1/clients/{id}/rounds/{round}/update</c>: the update payload (safetensors), validated before it is accepted;</item>
/// <item><c>GET /v1/base?have=V</c>: what brings a client holding base version V (-1: none) to the current base (safetensors,
/// see <see cref="BasePayload"/>): the base updates it missed (FLoRA) or the whole base, whichever is smaller;</item>
/// <item><c>GET /v1/status</c>: the caller's <see cref="RoundStatus"/> as JSON;</item>
/// <item><c>GET /v1/metrics</c>: every committed round's <see cref="RoundMetrics"/> as JSON (the global model's held-out losses when the server holds a test set).</item>
/// </list>
/// Headers <c>X-FedLora-Round</c> and <c>X-FedLora-Base-Version</c> say which round and base a reply belongs to.
/// Refusals are 4xx (503 when the server cannot save) with a plain-text message that says what was wrong.
/// The token, round and sampling are checked before a body is read, and a body is read into one buffer of its
/// declared length, at most what its assignment needs. Connections and request rates are limited
/// (<see cref="ServerLimits"/>); events are logged to <c>server.log</c> in the state folder (and the console).
/// </summary>
public sealed class FederatedServer : IAsyncDisposable
{
    /// <summary>The round a reply belongs to.</summary>
    public const string RoundHeader = "X-FedLora-Round";

    /// <summary>The base weights' version a reply belongs to.</summary>
    public const string BaseVersionHeader = "X-FedLora-Base-Version";

    /// <summary>The log file in the state folder.</summary>
    public const string LogFile = "server.log";

    /// <summary>The largest enrollment body read, in bytes.</summary>
    public const int MaxEnrollBytes = 4096;

    private const string ClientItem = "fedlora.client";
    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(10);
    private readonly RoundCoordinator _coordinator;
    private readonly ClientTokens _tokens;
    private readonly JobDescription _job;
    private readonly ServerOptions _options;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<int, bool> _toldFinished = new();
    private readonly Dictionary<IPAddress, int> _connections = [];
    private WebApplication? _app;
    private Task? _ticker;
    private readonly ConcurrentDictionary<int, long> _sentTo = new();
    private readonly ConcurrentDictionary<int, long> _receivedFrom = new();
    private int _openConnections;
    private long _lastLimitLog;
    private long _bytesReceived;
    private long _bytesSent;
    private bool _stopped;

    /// <summary>
    /// Prepares the job (resuming from the state folder if it holds one); nothing listens until <see cref="StartAsync"/>.
    /// <paramref name="model"/> holds the job's initial base weights; the global model is evaluated as
    /// <paramref name="evaluation"/> says after each round (<c>GET /v1/metrics</c>).
    /// </summary>
    public FederatedServer(IFederatedStrategy strategy, Model.Gpt model, IReadOnlyList<ClientBudget> budgets, ClientTokens tokens, ServerOptions options,
        ServerEvaluation? evaluation = null)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(budgets);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(options);
        if (tokens.Count != budgets.Count) throw new ArgumentException($"{tokens.Count} client tokens for {budgets.Count} clients: give exactly one per client", nameof(tokens));
        options.Validate(budgets.Count);
        _loggers = CreateLoggers(options);
        _log = _loggers.CreateLogger("FedLora.Server");
        try
        {
            _coordinator = new RoundCoordinator(strategy, model, budgets, options, logger: _loggers.CreateLogger("FedLora.Rounds"), evaluation: evaluation);
        }
        catch
        {
            _loggers.Dispose();
            throw;
        }
        _tokens = tokens;
        _options = options;
        _job = new JobDescription(strategy.Name, options.Rounds, options.Seed, model.Config, options.Batch, options.Time, options.Local, _coordinator.BaseFingerprint);
    }

    /// <summary>The round loop.</summary>
    public RoundCoordinator Coordinator => _coordinator;

    /// <summary>The address the server listens on, once started.</summary>
    public Uri? Address { get; private set; }

    /// <summary>Update payload bytes received.</summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    /// <summary>Assignment and base-weight payload bytes sent.</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent);

    /// <summary>Payload bytes sent to client <paramref name="clientId"/> (assignments and base downloads).</summary>
    public long BytesSentTo(int clientId) => _sentTo.GetValueOrDefault(clientId);

    /// <summary>Update payload bytes received from client <paramref name="clientId"/> and taken.</summary>
    public long BytesReceivedFrom(int clientId) => _receivedFrom.GetValueOrDefault(clientId);

    /// <summary>Cancelled when the host is asked to stop (SIGTERM, Ctrl+C) or <see cref="StopAsync"/> runs.</summary>
    public CancellationToken ShutdownRequested => _stopping.Token;

    /// <summary>Listens on <paramref name="address"/>:<paramref name="port"/> (0: any free port), over HTTPS when given a certificate.</summary>
    public async Task<Uri> StartAsync(IPAddress address, int port, X509Certificate2? certificate = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (_app is not null) throw new InvalidOperationException("the server is already started");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(_loggers);
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = ShutdownTimeout);
        builder.Services.Configure<ConsoleLifetimeOptions>(lifetime => lifetime.SuppressStatusMessages = true);
        builder.Services.AddRateLimiter(ConfigureRateLimits);
        var limits = _options.Limits;
        builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // A backstop above our own per-connection check, which logs and counts per address.
            kestrel.Limits.MaxConcurrentConnections = limits.MaxConnections + 64;
            kestrel.Limits.KeepAliveTimeout = limits.KeepAliveTimeout;
            kestrel.Limits.RequestHeadersTimeout = limits.RequestHeadersTimeout;
            kestrel.Limits.MinRequestBodyDataRate = new MinDataRate(limits.MinRequestBodyBytesPerSecond, TimeSpan.FromSeconds(5));
            kestrel.Limits.MaxRequestBodySize = Math.Max(_options.MaxUploadBytes, MaxEnrollBytes);
            kestrel.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
            kestrel.Listen(address, port, listen =>
            {
                listen.Use(next => connection => LimitConnectionsAsync(connection, next));
                if (certificate is not null) listen.UseHttps(certificate);
            });
        });
        var app = builder.Build();
        app.Use(ObserveAsync);
        app.Use(IdentifyAsync);
        app.UseRateLimiter();
        MapRoutes(app);
        await app.StartAsync(cancellation).ConfigureAwait(false);
        _app = app;
        app.Lifetime.ApplicationStopping.Register(() => _stopping.Cancel());
        var bound = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Address = new Uri(bound.Replace("[::]", "localhost", StringComparison.Ordinal));
        ServerLog.Listening(_log, Address);
        var tick = TimeSpan.FromMilliseconds(Math.Clamp(_options.RoundDeadline.TotalMilliseconds / 4, 10, 1000));
        _ticker = TickAsync(tick, _stopping.Token);
        return Address;
    }

    /// <summary>Completes when the last round has been aggregated.</summary>
    public Task Finished => _coordinator.Finished;

    /// <summary>
    /// After the job finished: waits until every client has been told so (410 on its next poll), at most
    /// <paramref name="grace"/>, so that clients end cleanly instead of finding the server gone.
    /// </summary>
    public async Task LingerAsync(TimeSpan grace, CancellationToken cancellation = default)
    {
        await Finished.WaitAsync(cancellation).ConfigureAwait(false);
        var until = DateTime.UtcNow + grace;
        while (_toldFinished.Count < _tokens.Count && DateTime.UtcNow < until)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellation).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Stops gracefully: no new connections, requests in progress get up to 10 s, the ticker stops. Every
    /// accepted update of the open round is already in the state folder, so a restart resumes the round with it.
    /// </summary>
    public async Task StopAsync()
    {
        if (_stopped) return;
        _stopped = true;
        ServerLog.Stopping(_log, _coordinator.AcceptedCount);
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_ticker is not null) await _ticker.ConfigureAwait(false);
        if (_app is not null)
        {
            using var timeout = new CancellationTokenSource(ShutdownTimeout);
            await _app.StopAsync(timeout.Token).ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        if (_app is not null) await _app.DisposeAsync().ConfigureAwait(false);
        _loggers.Dispose();
        _stopping.Dispose();
    }

    private static ILoggerFactory CreateLoggers(ServerOptions options) => LoggerFactory.Create(logging =>
    {
        logging.SetMinimumLevel(LogLevel.Information);
        logging.AddFilter("Microsoft", LogLevel.Warning);
        if (options.StateDirectory is { } folder)
        {
            StateStore.CreateOwnerOnly(folder);
            logging.AddProvider(new FileLoggerProvider(Path.Combine(folder, LogFile)));
        }
        if (options.ConsoleLog) logging.AddSimpleConsole(console => { console.SingleLine = true; console.IncludeScopes = true; console.TimestampFormat = "HH:mm:ss "; });
    });

    /// <summary>The deadline ticker: survives (and logs) any exception until the server stops.</summary>
    private async Task TickAsync(TimeSpan period, CancellationToken cancellation)
    {
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellation).ConfigureAwait(false))
            {
                try
                {
                    _coordinator.Tick();
                }
#pragma warning disable CA1031 // The ticker must outlive any failure of one tick; the failure is logged.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    ServerLog.TickerFailed(_log, e);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    /// <summary>Refuses a connection beyond the total or per-address limit (closing it at once), logging at most once a second.</summary>
    private async Task LimitConnectionsAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        var address = (connection.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
        int open;
        bool admitted;
        lock (_connections)
        {
            open = _connections.GetValueOrDefault(address);
            admitted = open < _options.Limits.MaxConnectionsPerAddress && _openConnections < _options.Limits.MaxConnections;
            if (admitted)
            {
                _connections[address] = open + 1;
                _openConnections++;
            }
        }
        if (!admitted)
        {
            var now = Environment.TickCount64;
            var last = Interlocked.Read(ref _lastLimitLog);
            if (now - last >= 1000 && Interlocked.CompareExchange(ref _lastLimitLog, now, last) == last)
            {
                var total = open < _options.Limits.MaxConnectionsPerAddress;
                ServerLog.ConnectionRefused(_log, total ? "any address" : address.ToString(), total ? _openConnections : open,
                    total ? _options.Limits.MaxConnections : _options.Limits.MaxConnectionsPerAddress);
            }
            connection.Abort(new ConnectionAbortedException("connection limit reached"));
            return;
        }
        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            lock (_connections)
            {
                _openConnections--;
                if (--_connections[address] == 0) _connections.Remove(address);
            }
        }
    }

    private void ConfigureRateLimits(RateLimiterOptions rate)
    {
        var limits = _options.Limits;
        static TokenBucketRateLimiterOptions Bucket(int perSecond) => new()
        {
            TokenLimit = perSecond * 10,
            TokensPerPeriod = perSecond,
            ReplenishmentPeriod = TimeSpan.FromSeconds(1),
            QueueLimit = 0,
            AutoReplenishment = true,
        };
        rate.GlobalLimiter = PartitionedRateLimiter.CreateChained(
            PartitionedRateLimiter.Create<HttpContext, string>(context =>
                RateLimitPartition.GetTokenBucketLimiter("address " + (context.Connection.RemoteIpAddress?.ToString() ?? "?"), _ => Bucket(limits.RequestsPerSecondPerAddress))),
            PartitionedRateLimiter.Create<HttpContext, string>(context => context.Items[ClientItem] is int id
                ? RateLimitPartition.GetTokenBucketLimiter("client " + id.ToString(CultureInfo.InvariantCulture), _ => Bucket(limits.RequestsPerSecondPerClient))
                : RateLimitPartition.GetNoLimiter("anonymous")));
        rate.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
        rate.OnRejected = (rejected, _) =>
        {
            var context = rejected.HttpContext;
            var partition = context.Items[ClientItem] is int id ? $"address or client {id}" : "address";
            ServerLog.RateLimited(_log, context.Request.Method, context.Request.Path, context.Connection.RemoteIpAddress?.ToString() ?? "?", partition);
            context.Response.Headers.RetryAfter = "1";
            return ValueTask.CompletedTask;
        };
    }

    /// <summary>Per request: a log scope (request id, client id, round), the outcome logged, refusals turned into their status and message.</summary>
    private async Task ObserveAsync(HttpContext context, RequestDelegate next)
    {
        var values = context.Request.RouteValues;
        using var scope = _log.BeginScope(new Dictionary<string, object?>
        {
            ["RequestId"] = context.TraceIdentifier,
            ["ClientId"] = values.TryGetValue("id", out var id) ? id : null,
            ["Round"] = values.TryGetValue("round", out var round) ? round : null,
        });
        var watch = Stopwatch.StartNew();
        try
        {
            await next(context).ConfigureAwait(false);
        }
        catch (UploadRejectedException e)
        {
            await Refuse(context, e.StatusCode, e.Message).ConfigureAwait(false);
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e)
        {
            await Refuse(context, e.StatusCode, UploadRejectedException.Shorten(e.Message)).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away.
        }
#pragma warning disable CA1031 // One failed request must not take the server down; it is logged, the client gets a 500 without internals.
        catch (Exception e)
#pragma warning restore CA1031
        {
            ServerLog.Unhandled(_log, e, context.Request.Method, context.Request.Path);
            await Refuse(context, 500, $"internal error (request {context.TraceIdentifier}); the server logged it").ConfigureAwait(false);
        }
        var status = context.Response.StatusCode;
        var path = context.Request.Path.ToString();
        if (status is 200 or 204 && context.Request.Method == HttpMethods.Get) ServerLog.Poll(_log, context.Request.Method, path, status, watch.Elapsed.TotalMilliseconds);
        else ServerLog.Request(_log, context.Request.Method, path, status, watch.Elapsed.TotalMilliseconds);
    }

    /// <summary>Resolves the bearer token to its client once, for the rate limiter and the endpoints.</summary>
    private Task IdentifyAsync(HttpContext context, RequestDelegate next)
    {
        var header = context.Request.Headers.Authorization.ToString();
        const string Scheme = "Bearer ";
        if (header.StartsWith(Scheme, StringComparison.Ordinal) && header.Length - Scheme.Length <= 512 && _tokens.ClientOf(header[Scheme.Length..].Trim()) is { } owner)
        {
            context.Items[ClientItem] = owner;
        }
        return next(context);
    }

    private void MapRoutes(WebApplication app)
    {
        var clients = app.MapGroup("/v1/clients/{id:int}");
        clients.MapPost("/enroll", EnrollAsync);
        clients.MapGet("/assignment", (int id, HttpContext context) =>
        {
            if (Authenticate(context, id) is { } refused) return refused;
            var reply = _coordinator.AssignmentFor(id);
            context.Response.Headers[RoundHeader] = reply.Round.ToString(CultureInfo.InvariantCulture);
            context.Response.Headers[BaseVersionHeader] = reply.BaseVersion.ToString(CultureInfo.InvariantCulture);
            if (reply.Phase == RoundPhase.Finished)
            {
                _toldFinished.TryAdd(id, true);
                return Results.Text($"the job is finished after {reply.Round} rounds", statusCode: 410);
            }
            if (reply.Payload is null) return Results.NoContent();
            CountSent(id, reply.Payload.LongLength);
            return Results.Bytes(reply.Payload, "application/octet-stream");
        });
        clients.MapPost("/rounds/{round:int}/update", UploadAsync);

        var job = app.MapGroup("/v1");
        job.MapGet("/base", (HttpContext context, int? have) =>
        {
            if (Authenticate(context, null) is { } refused) return refused;
            var client = (int)context.Items[ClientItem]!;
            var reply = _coordinator.BaseFor(client, have ?? -1);
            context.Response.Headers[BaseVersionHeader] = reply.Version.ToString(CultureInfo.InvariantCulture);
            CountSent(client, reply.Payload.LongLength);
            return Results.Bytes(reply.Payload, "application/octet-stream");
        });
        job.MapGet("/metrics", (HttpContext context) =>
        {
            if (Authenticate(context, null) is { } refused) return refused;
            return Results.Json(_coordinator.MetricsHistory);
        });
        job.MapGet("/status", (HttpContext context) =>
        {
            if (Authenticate(context, null) is { } refused) return refused;
            return Results.Json(_coordinator.StatusFor((int)context.Items[ClientItem]!));
        });
    }

    /// <summary>Authenticates first, then reads at most <see cref="MaxEnrollBytes"/> of JSON.</summary>
    private async Task<IResult> EnrollAsync(int id, HttpContext context)
    {
        if (Authenticate(context, id) is { } refused) return refused;
        LimitBody(context, MaxEnrollBytes);
        if (context.Request.ContentLength > MaxEnrollBytes) return Results.Text($"the enrollment is {context.Request.ContentLength} bytes, above the limit of {MaxEnrollBytes}", statusCode: 413);
        EnrollRequest? request;
        try
        {
            request = await JsonSerializer.DeserializeAsync<EnrollRequest>(context.Request.Body, JsonSerializerOptions.Web, context.RequestAborted).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            return Results.Text(UploadRejectedException.Shorten($"the enrollment must be JSON {{\"exampleCount\": n}}: {e.Message}"), statusCode: 400);
        }
        if (request is null) return Results.Text("the enrollment must be JSON {\"exampleCount\": n}, not null", statusCode: 400);
        _coordinator.Enroll(id, request.ExampleCount);
        return Results.Json(_job);
    }

    /// <summary>
    /// Checks token, round and sampling and takes the client's one upload slot before reading a byte of the body;
    /// then reads the body (its declared length, at most the assignment's size) into one buffer.
    /// </summary>
    private async Task<IResult> UploadAsync(int id, int round, HttpContext context)
    {
        if (Authenticate(context, id) is { } refused) return refused;
        using var slot = _coordinator.BeginUpload(id, round);
        LimitBody(context, slot.MaxBytes);
        if (context.Request.ContentLength is not { } length) return Results.Text("the update needs a Content-Length header", statusCode: 411);
        if (length > slot.MaxBytes) return Results.Text($"the update is {length} bytes, above the limit of {slot.MaxBytes} bytes for client {id}'s assignment", statusCode: 413);
        var payload = new byte[length];
        try
        {
            await context.Request.Body.ReadExactlyAsync(payload, context.RequestAborted).ConfigureAwait(false);
        }
        catch (EndOfStreamException)
        {
            return Results.Text($"the update ended before its declared {length} bytes", statusCode: 400);
        }
        Interlocked.Add(ref _bytesReceived, payload.Length);
        _coordinator.Submit(id, round, payload);
        _receivedFrom.AddOrUpdate(id, payload.Length, (_, total) => total + payload.Length);
        return Results.Text($"update of client {id} for round {round} accepted");
    }

    private void CountSent(int clientId, long bytes)
    {
        Interlocked.Add(ref _bytesSent, bytes);
        _sentTo.AddOrUpdate(clientId, bytes, (_, total) => total + bytes);
    }

    private static void LimitBody(HttpContext context, long bytes)
    {
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } feature) feature.MaxRequestBodySize = bytes;
    }

    private static async Task Refuse(HttpContext context, int status, string message)
    {
        if (context.Response.HasStarted) return;
        context.Response.Clear();
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        await context.Response.WriteAsync(message).ConfigureAwait(false);
    }

    /// <summary>Null when the bearer token is client <paramref name="clientId"/>'s (or any client's when null); else the refusal.</summary>
    private IResult? Authenticate(HttpContext context, int? clientId)
    {
        var header = context.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.Ordinal)) return Results.Text("missing 'Authorization: Bearer TOKEN' header", statusCode: 401);
        if (context.Items[ClientItem] is not int owner) return Results.Text("unknown token", statusCode: 401);
        if (clientId is { } id && id != owner)
        {
            return id < 0 || id >= _tokens.Count
                ? Results.Text($"there is no client {id} in this job (ids 0..{_tokens.Count - 1})", statusCode: 404)
                : Results.Text($"the token belongs to client {owner}, not client {id}", statusCode: 403);
        }
        return null;
    }
}

/// <summary>The body of an enrollment.</summary>
/// <param name="ExampleCount">n_k, the client's number of training examples.</param>
public sealed record EnrollRequest(int ExampleCount);
