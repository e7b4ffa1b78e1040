using Microsoft.Extensions.Logging;

namespace FedLora.Server;

/// <summary>
/// Every line the server logs, as structured events (client id, round and outcome as fields). None takes a
/// token or a token's hash: requests are logged by method, route, client id and status only.
/// </summary>
internal static partial class ServerLog
{
    [LoggerMessage(1, LogLevel.Information, "client {ClientId} enrolled with {ExampleCount} examples ({Enrolled}/{Clients} enrolled)")]
    public static partial void Enrolled(ILogger logger, int clientId, int exampleCount, int enrolled, int clients);

    [LoggerMessage(2, LogLevel.Warning, "client {ClientId} reports {Reported} examples but the operator declared {Declared}: the declared count is used")]
    public static partial void DeclaredCountUsed(ILogger logger, int clientId, int reported, int declared);

    [LoggerMessage(3, LogLevel.Information, "round {Round} opened: {Sampled} clients sampled, deadline {Deadline:O}")]
    public static partial void RoundOpened(ILogger logger, int round, int sampled, DateTimeOffset deadline);

    [LoggerMessage(4, LogLevel.Information, "round {Round}: update of client {ClientId} accepted ({Bytes} bytes, change norm {Norm:G4}, clip {Clip:G4}) {Received}/{Sampled}")]
    public static partial void UpdateAccepted(ILogger logger, int round, int clientId, long bytes, double norm, double clip, int received, int sampled);

    [LoggerMessage(5, LogLevel.Warning, "round {Round}: update of client {ClientId} clipped from change norm {Norm:G4} to {Clip:G4}")]
    public static partial void UpdateClipped(ILogger logger, int round, int clientId, double norm, double clip);

    [LoggerMessage(6, LogLevel.Warning, "round {Round}: update of client {ClientId} refused with {Status}: {Reason}")]
    public static partial void UpdateRefused(ILogger logger, int round, int clientId, int status, string reason);

    [LoggerMessage(7, LogLevel.Error, "round {Round}: the aggregate is rejected ({Problem}); re-aggregating without client {ClientId}, whose update had change norm {Norm:G4}")]
    public static partial void AggregateRejected(ILogger logger, int round, string problem, int clientId, double norm);

    [LoggerMessage(8, LogLevel.Information, "round {Round} closed with {Updates} updates and saved")]
    public static partial void RoundClosed(ILogger logger, int round, int updates);

    [LoggerMessage(9, LogLevel.Error, "round {Round} could not be saved (attempt {Attempt}); the round stays open and the next attempt is in {RetrySeconds:F0} s")]
    public static partial void SaveFailed(ILogger logger, Exception exception, int round, int attempt, double retrySeconds);

    [LoggerMessage(10, LogLevel.Error, "the deadline ticker caught an exception and keeps running")]
    public static partial void TickerFailed(ILogger logger, Exception exception);

    [LoggerMessage(11, LogLevel.Information, "resumed at round {Round} of {Rounds} from {Folder}, with {Pending} accepted updates of the open round")]
    public static partial void Resumed(ILogger logger, int round, int rounds, string folder, int pending);

    [LoggerMessage(12, LogLevel.Warning, "removed {Count} orphaned files from the state folder: {Names}")]
    public static partial void OrphansRemoved(ILogger logger, int count, string names);

    [LoggerMessage(13, LogLevel.Warning, "a kept update of client {ClientId} for round {Round} no longer matches its assignment and is dropped: {Reason}")]
    public static partial void PendingDropped(ILogger logger, int clientId, int round, string reason);

    [LoggerMessage(14, LogLevel.Information, "the job is finished after {Rounds} rounds")]
    public static partial void Finished(ILogger logger, int rounds);

    [LoggerMessage(20, LogLevel.Information, "{Method} {Route} -> {Status} in {Milliseconds:F1} ms")]
    public static partial void Request(ILogger logger, string method, string route, int status, double milliseconds);

    [LoggerMessage(21, LogLevel.Debug, "{Method} {Route} -> {Status} in {Milliseconds:F1} ms")]
    public static partial void Poll(ILogger logger, string method, string route, int status, double milliseconds);

    [LoggerMessage(22, LogLevel.Warning, "connection from {Address} refused: it already has {Open} open connections (limit {Limit})")]
    public static partial void ConnectionRefused(ILogger logger, string address, int open, int limit);

    [LoggerMessage(23, LogLevel.Warning, "{Method} {Route} from {Address} refused with 429: request rate limit reached ({Partition})")]
    public static partial void RateLimited(ILogger logger, string method, string route, string address, string partition);

    [LoggerMessage(24, LogLevel.Error, "{Method} {Route} failed")]
    public static partial void Unhandled(ILogger logger, Exception exception, string method, string route);

    [LoggerMessage(25, LogLevel.Information, "stopping: no new connections; the open round's {Accepted} accepted updates are kept in the state folder")]
    public static partial void Stopping(ILogger logger, int accepted);

    [LoggerMessage(26, LogLevel.Information, "listening on {Address}")]
    public static partial void Listening(ILogger logger, Uri address);
}
