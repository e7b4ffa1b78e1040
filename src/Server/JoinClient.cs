using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using FedLora.Kernels;
using FedLora.Lora.Safetensors;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Runtime;
using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace FedLora.Server;

/// <summary>How persistent a joining client is; every loop is bounded in count and time.</summary>
public sealed record JoinOptions
{
    /// <summary>Wait between two polls for an assignment.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Polls before giving up.</summary>
    public int MaxPolls { get; init; } = 1_000_000;

    /// <summary>Total time before giving up.</summary>
    public TimeSpan MaxDuration { get; init; } = TimeSpan.FromDays(7);

    /// <summary>Retries of one request through transient errors (connection refused, 5xx, 408, 429, timeouts).</summary>
    public int MaxRetries { get; init; } = 8;

    /// <summary>The first retry's delay; later ones grow exponentially (with jitter) up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The longest wait between two retries.</summary>
    public TimeSpan MaxRetryDelay { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Time limit of one request attempt.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromMinutes(5);
}

/// <summary>The server refused a request for good (a 4xx other than "round closed"): the message says why.</summary>
public sealed class JoinRefusedException : Exception
{
    /// <summary>Creates the exception.</summary>
    public JoinRefusedException(string message) : base(message) { }

    /// <summary>Creates the exception.</summary>
    public JoinRefusedException() { }

    /// <summary>Creates the exception.</summary>
    public JoinRefusedException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>What a client did in a job.</summary>
/// <param name="RoundsTrained">Rounds it trained and whose update the server accepted.</param>
/// <param name="LateRounds">Rounds whose update arrived after the round closed (refused with 409).</param>
/// <param name="BytesDownloaded">Response bytes received (assignments and base weights).</param>
/// <param name="BytesUploaded">Update bytes sent.</param>
public sealed record JoinResult(int RoundsTrained, int LateRounds, long BytesDownloaded, long BytesUploaded);

/// <summary>
/// <c>fedlora join</c>: one client of a networked job. It enrolls with its number of examples, then
/// loops: poll for an assignment, bring its base weights to the assignment's version when they differ
/// (FLoRA: the base updates it missed, or the whole base when that is smaller; a client that starts with the
/// job's own base weights downloads no base at all), train with <see cref="ClientTraining.Train"/> on batches
/// seeded by <see cref="RoundSchedule.BatchSeed"/> (so it trains exactly what the simulation would), upload. Transient errors are retried with
/// exponential backoff; it keeps no state of its own, so it is safe to kill and restart.
/// </summary>
public sealed class JoinClient
{
    private readonly HttpClient _http;
    private readonly int _clientId;
    private readonly Backend _backend;
    private readonly IReadOnlyList<InstructionExample> _examples;
    private readonly float[]? _baseWeights;
    private readonly JoinOptions _options;
    private readonly ResiliencePipeline<HttpResponseMessage> _retry;
    private long _downloaded;
    private long _uploaded;

    /// <summary>
    /// A client of the server <paramref name="http"/> points at (its BaseAddress), training on <paramref name="backend"/>.
    /// <paramref name="baseWeights"/> is its own copy of the job's base weights (the model it was given), if any: when
    /// it matches the server's, the client starts from it instead of downloading the base.
    /// </summary>
    public JoinClient(HttpClient http, int clientId, string token, Backend backend, IReadOnlyList<InstructionExample> examples, JoinOptions? options = null,
        float[]? baseWeights = null)
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentException.ThrowIfNullOrWhiteSpace(token);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(examples);
        if (http.BaseAddress is null) throw new ArgumentException("the HttpClient needs a BaseAddress (the server's URL)", nameof(http));
        if (examples.Count == 0) throw new ArgumentException($"client {clientId} has no training examples", nameof(examples));
        _http = http;
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        _clientId = clientId;
        _backend = backend;
        _examples = examples;
        _baseWeights = baseWeights;
        _options = options ?? new JoinOptions();
        var pipeline = new ResiliencePipelineBuilder<HttpResponseMessage>();
        if (_options.MaxRetries > 0)
        {
            pipeline.AddRetry(new RetryStrategyOptions<HttpResponseMessage>
            {
                ShouldHandle = new PredicateBuilder<HttpResponseMessage>()
                    .Handle<HttpRequestException>()
                    .Handle<TimeoutRejectedException>()
                    .HandleResult(response => IsTransient(response.StatusCode)),
                MaxRetryAttempts = _options.MaxRetries,
                Delay = _options.RetryDelay,
                MaxDelay = _options.MaxRetryDelay,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                OnRetry = arguments =>
                {
                    arguments.Outcome.Result?.Dispose();
                    return default;
                },
            });
        }
        _retry = pipeline.AddTimeout(_options.AttemptTimeout).Build();
    }

    /// <summary>Progress messages.</summary>
    public event Action<string>? Log;

    /// <summary>Takes part in the job until the server says it is finished.</summary>
    public async Task<JoinResult> RunAsync(CancellationToken cancellation = default)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        limit.CancelAfter(_options.MaxDuration);
        var token = limit.Token;
        var job = await EnrollAsync(token).ConfigureAwait(false);
        using var model = new Gpt(_backend, job.Model, job.Batch, job.Time);
        var baseVersion = -1;
        if (_baseWeights is { } own && own.Length == model.Layout.Length)
        {
            _backend.Upload(own, model.Parameters);
            if (BasePayload.Fingerprint(model) == job.BaseFingerprint) baseVersion = 0;
            else Log?.Invoke($"client {_clientId}: its base weights differ from the server's; it downloads the server's");
        }
        var (trained, late) = (0, 0);
        for (var poll = 0; poll < _options.MaxPolls; poll++)
        {
            using var response = await SendAsync(() => new HttpRequestMessage(HttpMethod.Get, $"v1/clients/{_clientId}/assignment"), token).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.Gone) return new JoinResult(trained, late, _downloaded, _uploaded);
            await ThrowIfRefused(response, token).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.NoContent)
            {
                await Task.Delay(_options.PollInterval, token).ConfigureAwait(false);
                continue;
            }
            var payload = await ReadAsync(response, token).ConfigureAwait(false);
            var assignment = AssignmentCodec.Decode(payload);
            var version = HeaderInt(response, FederatedServer.BaseVersionHeader);
            if (version != baseVersion)
            {
                baseVersion = await DownloadBaseAsync(model, baseVersion, token).ConfigureAwait(false);
                if (baseVersion != version) continue; // the round closed meanwhile: ask again.
            }
            var batches = new InstructionBatcher(_examples, job.Batch, job.Time, RoundSchedule.BatchSeed(job.Seed, assignment.Round, _clientId));
            var (update, loss) = await Task.Run(() => ClientTraining.Train(model, assignment, batches, job.Local), token).ConfigureAwait(false);
            var body = WirePayload.Serialize(update.Upload);
            using var reply = await SendAsync(() => new HttpRequestMessage(HttpMethod.Post, $"v1/clients/{_clientId}/rounds/{assignment.Round}/update")
            {
                Content = new ByteArrayContent(body) { Headers = { ContentType = new MediaTypeHeaderValue("application/octet-stream") } },
            }, token).ConfigureAwait(false);
            _uploaded += body.LongLength;
            if (reply.StatusCode == HttpStatusCode.Conflict)
            {
                late++;
                Log?.Invoke($"client {_clientId}: round {assignment.Round} update not taken: {await reply.Content.ReadAsStringAsync(token).ConfigureAwait(false)}");
                continue;
            }
            await ThrowIfRefused(reply, token).ConfigureAwait(false);
            trained++;
            Log?.Invoke($"client {_clientId}: round {assignment.Round} trained at rank {update.Rank}, loss {loss:F4}, {body.Length} bytes up");
        }
        throw new TimeoutException($"client {_clientId} gave up after {_options.MaxPolls} polls without the job finishing");
    }

    private async Task<JobDescription> EnrollAsync(CancellationToken cancellation)
    {
        using var response = await SendAsync(() => new HttpRequestMessage(HttpMethod.Post, $"v1/clients/{_clientId}/enroll")
        {
            Content = JsonContent.Create(new EnrollRequest(_examples.Count)),
        }, cancellation).ConfigureAwait(false);
        await ThrowIfRefused(response, cancellation).ConfigureAwait(false);
        return await response.Content.ReadFromJsonAsync<JobDescription>(cancellation).ConfigureAwait(false)
            ?? throw new JoinRefusedException("the server answered the enrollment with an empty job description");
    }

    /// <summary>
    /// Brings <paramref name="model"/>'s base from <paramref name="haveVersion"/> (-1: none) to the server's: the server sends
    /// the base updates it missed or the whole base, whichever is smaller. Returns the version it now holds.
    /// </summary>
    private async Task<int> DownloadBaseAsync(Gpt model, int haveVersion, CancellationToken cancellation)
    {
        var have = haveVersion.ToString(CultureInfo.InvariantCulture);
        using var response = await SendAsync(() => new HttpRequestMessage(HttpMethod.Get, $"v1/base?have={have}"), cancellation).ConfigureAwait(false);
        await ThrowIfRefused(response, cancellation).ConfigureAwait(false);
        var payload = await ReadAsync(response, cancellation).ConfigureAwait(false);
        try
        {
            return BasePayload.Apply(payload, model, haveVersion);
        }
        catch (Exception e) when (e is FormatException or SafetensorsFormatException)
        {
            throw new JoinRefusedException($"the server's base download is malformed: {e.Message}", e);
        }
    }

    private async Task<HttpResponseMessage> SendAsync(Func<HttpRequestMessage> request, CancellationToken cancellation) =>
        await _retry.ExecuteAsync(async token =>
        {
            using var message = request();
            return await _http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, token).ConfigureAwait(false);
        }, cancellation).ConfigureAwait(false);

    private async Task<byte[]> ReadAsync(HttpResponseMessage response, CancellationToken cancellation)
    {
        var bytes = await response.Content.ReadAsByteArrayAsync(cancellation).ConfigureAwait(false);
        _downloaded += bytes.LongLength;
        return bytes;
    }

    private static async Task ThrowIfRefused(HttpResponseMessage response, CancellationToken cancellation)
    {
        if (response.IsSuccessStatusCode) return;
        var message = await response.Content.ReadAsStringAsync(cancellation).ConfigureAwait(false);
        throw new JoinRefusedException($"the server refused {response.RequestMessage?.Method} {response.RequestMessage?.RequestUri?.AbsolutePath} with {(int)response.StatusCode}: {message}");
    }

    private static bool IsTransient(HttpStatusCode status) =>
        (int)status >= 500 || status is HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests;

    private static int HeaderInt(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? int.Parse(values.First(), CultureInfo.InvariantCulture)
            : throw new JoinRefusedException($"the server's reply has no {name} header");
}
