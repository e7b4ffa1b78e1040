namespace FedLora.Cli;

/// <summary>A bad option or input found before any work started; its message says what to change.</summary>
internal sealed class UsageException(string message) : Exception(message);
