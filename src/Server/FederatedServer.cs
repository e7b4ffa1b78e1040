using System.Net;
using System.Security.Cryptography.X509Certificates;
using FedLora.Lora.Safetensors;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FedLora.Federation.Networking;

/// <summary>
/// Runs one federated job over HTTP (Kestrel), version 1 of the API. Every call carries the client's
/// bearer token, which must be that client's:
/// <list type="bullet">
/// <item><c>POST /v1/clients/{id}/enroll</c> with <c>{"exampleCount": n}</c>: records n_k, answers the <see cref="JobDescription"/>;</item>
/// <item><c>GET /v1/clients/{id}/assignment</c>: 200 and the assignment payload (safetensors) when sampled, 204 to wait, 410 when the job is over;</item>
/// <item><c>POST /v1/clients/{id}/rounds/{round}/update</c>: the update payload (safetensors), validated before it is accepted;</item>
/// <item><c>GET /v1/base</c>: the base weights (safetensors) the current round trains on;</item>
/// <item><c>GET /v1/status</c>: the <see cref="RoundStatus"/> as JSON.</item>
/// </list>
/// Headers <c>X-FedLora-Round</c> and <c>X-FedLora-Base-Version</c> say which round and base a reply belongs to.
/// Refusals are 4xx with a plain-text message that says what was wrong.
/// </summary>
public sealed class FederatedServer : IAsyncDisposable
{
    /// <summary>The round a reply belongs to.</summary>
    public const string RoundHeader = "X-FedLora-Round";

    /// <summary>The base weights' version a reply belongs to.</summary>
    public const string BaseVersionHeader = "X-FedLora-Base-Version";

    private readonly RoundCoordinator _coordinator;
    private readonly ClientTokens _tokens;
    private readonly JobDescription _job;
    private readonly ServerOptions _options;
    private readonly CancellationTokenSource _stopping = new();
    private WebApplication? _app;
    private Task? _ticker;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, bool> _toldFinished = new();
    private (int Version, byte[] Payload)? _baseCache;
    private long _bytesReceived;
    private long _bytesSent;

    /// <summary>Prepares the job (resuming from the state folder if it holds one); nothing listens until <see cref="StartAsync"/>.</summary>
    public FederatedServer(IFederatedStrategy strategy, Model.Gpt model, IReadOnlyList<ClientBudget> budgets, ClientTokens tokens, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(budgets);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(options);
        if (tokens.Count != budgets.Count) throw new ArgumentException($"{tokens.Count} client tokens for {budgets.Count} clients: give exactly one per client", nameof(tokens));
        _coordinator = new RoundCoordinator(strategy, model, budgets, options);
        _tokens = tokens;
        _options = options;
        _job = new JobDescription(strategy.Name, options.Rounds, options.Seed, model.Config, options.Batch, options.Time, options.Local);
    }

    /// <summary>The round loop.</summary>
    public RoundCoordinator Coordinator => _coordinator;

    /// <summary>The address the server listens on, once started.</summary>
    public Uri? Address { get; private set; }

    /// <summary>Update payload bytes received.</summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    /// <summary>Assignment and base-weight payload bytes sent.</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent);

    /// <summary>Listens on <paramref name="address"/>:<paramref name="port"/> (0: any free port), over HTTPS when given a certificate.</summary>
    public async Task<Uri> StartAsync(IPAddress address, int port, X509Certificate2? certificate = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (_app is not null) throw new InvalidOperationException("the server is already started");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = _options.MaxUploadBytes + 1;
            kestrel.Listen(address, port, listen =>
            {
                if (certificate is not null) listen.UseHttps(certificate);
            });
        });
        var app = builder.Build();
        MapRoutes(app);
        await app.StartAsync(cancellation).ConfigureAwait(false);
        _app = app;
        var bound = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Address = new Uri(bound.Replace("[::]", "localhost", StringComparison.Ordinal));
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

    /// <summary>Stops listening (the state folder keeps the last completed round).</summary>
    public async Task StopAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_ticker is not null) await _ticker.ConfigureAwait(false);
        if (_app is not null) await _app.StopAsync().ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        if (_app is not null) await _app.DisposeAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }

    private async Task TickAsync(TimeSpan period, CancellationToken cancellation)
    {
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellation).ConfigureAwait(false)) _coordinator.Tick();
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    private void MapRoutes(WebApplication app)
    {
        app.Use(async (context, next) =>
        {
            try
            {
                await next(context).ConfigureAwait(false);
            }
            catch (UploadRejectedException e)
            {
                await Refuse(context, e.StatusCode, e.Message).ConfigureAwait(false);
            }
            catch (BadHttpRequestException e)
            {
                await Refuse(context, e.StatusCode, e.Message).ConfigureAwait(false);
            }
        });
        app.MapPost("/v1/clients/{id:int}/enroll", (int id, EnrollRequest request, HttpContext context) =>
        {
            if (Authenticate(context, id) is { } refused) return refused;
            _coordinator.Enroll(id, request.ExampleCount);
            return Results.Json(_job);
        });
        app.MapGet("/v1/clients/{id:int}/assignment", (int id, HttpContext context) =>
        {
            if (Authenticate(context, id) is { } refused) return refused;
            var reply = _coordinator.AssignmentFor(id);
            context.Response.Headers[RoundHeader] = reply.Round.ToString(System.Globalization.CultureInfo.InvariantCulture);
            context.Response.Headers[BaseVersionHeader] = reply.BaseVersion.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (reply.Phase == RoundPhase.Finished)
            {
                _toldFinished.TryAdd(id, true);
                return Results.Text($"the job is finished after {reply.Round} rounds", statusCode: 410);
            }
            if (reply.Payload is null) return Results.NoContent();
            Interlocked.Add(ref _bytesSent, reply.Payload.LongLength);
            return Results.Bytes(reply.Payload, "application/octet-stream");
        });
        app.MapPost("/v1/clients/{id:int}/rounds/{round:int}/update", async (int id, int round, HttpContext context) =>
        {
            if (Authenticate(context, id) is { } refused) return refused;
            var payload = await ReadBodyAsync(context.Request, _options.MaxUploadBytes, context.RequestAborted).ConfigureAwait(false);
            Interlocked.Add(ref _bytesReceived, payload.Length);
            _coordinator.Submit(id, round, payload);
            return Results.Text($"update of client {id} for round {round} accepted");
        });
        app.MapGet("/v1/base", (HttpContext context) =>
        {
            if (Authenticate(context, null) is { } refused) return refused;
            var (version, payload) = _coordinator.WithModel((model, version) =>
            {
                // Serialized once per version: every client fetches the same weights.
                if (_baseCache is not { } cached || cached.Version != version)
                {
                    var writer = new SafetensorsWriter();
                    writer.AddFloats("parameters", model.Backend.ToArray(model.Parameters), model.Layout.Length);
                    _baseCache = cached = (version, writer.ToArray());
                }
                return cached;
            });
            context.Response.Headers[BaseVersionHeader] = version.ToString(System.Globalization.CultureInfo.InvariantCulture);
            Interlocked.Add(ref _bytesSent, payload.LongLength);
            return Results.Bytes(payload, "application/octet-stream");
        });
        app.MapGet("/v1/status", (HttpContext context) =>
        {
            if (Authenticate(context, null) is { } refused) return refused;
            return Results.Json(_coordinator.Status());
        });
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
        const string Scheme = "Bearer ";
        if (!header.StartsWith(Scheme, StringComparison.Ordinal)) return Results.Text("missing 'Authorization: Bearer TOKEN' header", statusCode: 401);
        var owner = _tokens.ClientOf(header[Scheme.Length..].Trim());
        if (owner is null) return Results.Text("unknown token", statusCode: 401);
        if (clientId is { } id && id != owner)
        {
            return id < 0 || id >= _tokens.Count
                ? Results.Text($"there is no client {id} in this job (ids 0..{_tokens.Count - 1})", statusCode: 404)
                : Results.Text($"the token belongs to client {owner}, not client {id}", statusCode: 403);
        }
        return null;
    }

    /// <summary>The request body, refused with 413 as soon as it exceeds <paramref name="limit"/> bytes.</summary>
    private static async Task<byte[]> ReadBodyAsync(HttpRequest request, long limit, CancellationToken cancellation)
    {
        if (request.ContentLength > limit) throw new UploadRejectedException(413, $"the update is {request.ContentLength} bytes, above the limit of {limit} bytes");
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, cancellation).ConfigureAwait(false)) > 0)
        {
            if (buffer.Length + read > limit) throw new UploadRejectedException(413, $"the update exceeds the limit of {limit} bytes");
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }
}

/// <summary>The body of an enrollment.</summary>
/// <param name="ExampleCount">n_k, the client's number of training examples.</param>
public sealed record EnrollRequest(int ExampleCount);
