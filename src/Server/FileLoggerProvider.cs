using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace FedLora.Server;

/// <summary>
/// Writes log events as JSON lines (time, level, category, event, message, every structured field and
/// scope field such as RequestId, ClientId, Round) to one file, owner-only, appended and flushed per line.
/// </summary>
public sealed class FileLoggerProvider : ILoggerProvider, ISupportExternalScope
{
    private readonly Lock _gate = new();
    private readonly StreamWriter _writer;
    private IExternalScopeProvider _scopes = new LoggerExternalScopeProvider();

    /// <summary>Appends to <paramref name="path"/>, creating it (mode 600 on Unix) if needed.</summary>
    public FileLoggerProvider(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var options = new FileStreamOptions { Mode = FileMode.Append, Access = FileAccess.Write, Share = FileShare.Read };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        _writer = new StreamWriter(path, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false), options) { AutoFlush = true };
    }

    /// <summary>The lowest level written.</summary>
    public LogLevel MinimumLevel { get; init; } = LogLevel.Information;

    /// <inheritdoc/>
    public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

    /// <inheritdoc/>
    public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_gate) _writer.Dispose();
    }

    private void Write(string category, LogLevel level, EventId id, object? state, Exception? exception, string message)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("time", DateTimeOffset.UtcNow);
            json.WriteString("level", level.ToString());
            json.WriteString("category", category);
            if (id.Id != 0) json.WriteNumber("event", id.Id);
            json.WriteString("message", message);
            var fields = new Dictionary<string, object?>(StringComparer.Ordinal);
            _scopes.ForEachScope((scope, all) => AddFields(scope, all), fields);
            AddFields(state, fields);
            foreach (var (key, value) in fields)
            {
                if (key == "{OriginalFormat}") continue;
                json.WritePropertyName(key);
                WriteValue(json, value);
            }
            if (exception is not null) json.WriteString("exception", exception.ToString());
            json.WriteEndObject();
        }
        var line = Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
        lock (_gate)
        {
            try
            {
                _writer.WriteLine(line);
            }
            catch (IOException)
            {
                // A full or vanished disk must not take the server down; the console log (if on) still has it.
            }
            catch (ObjectDisposedException)
            {
                // Logged after shutdown.
            }
        }
    }

    private static void AddFields(object? state, Dictionary<string, object?> fields)
    {
        if (state is IEnumerable<KeyValuePair<string, object?>> pairs)
        {
            foreach (var (key, value) in pairs) fields[key] = value;
        }
    }

    private static void WriteValue(Utf8JsonWriter json, object? value)
    {
        switch (value)
        {
            case null: json.WriteNullValue(); break;
            case int i: json.WriteNumberValue(i); break;
            case long l: json.WriteNumberValue(l); break;
            case double d when double.IsFinite(d): json.WriteNumberValue(d); break;
            case bool b: json.WriteBooleanValue(b); break;
            default: json.WriteStringValue(Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)); break;
        }
    }

    private sealed class FileLogger(FileLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => owner._scopes.Push(state);

        public bool IsEnabled(LogLevel logLevel) => logLevel >= owner.MinimumLevel && logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            owner.Write(category, logLevel, eventId, state, exception, formatter(state, exception));
        }
    }
}
