namespace FedLora.Lora.Safetensors;

/// <summary>
/// A safetensors file or payload is malformed, or does not hold what the caller asked for. The
/// message names the source (file path or payload label), the tensor when one is at fault, and the
/// problem.
/// </summary>
public sealed class SafetensorsFormatException : IOException
{
    /// <summary>Creates an exception with a default message.</summary>
    public SafetensorsFormatException()
    {
    }

    /// <summary>Creates an exception with the given message.</summary>
    public SafetensorsFormatException(string message) : base(message)
    {
    }

    /// <summary>Creates an exception with the given message and inner exception.</summary>
    public SafetensorsFormatException(string message, Exception innerException) : base(message, innerException)
    {
    }

    internal SafetensorsFormatException(string source, string? tensorName, string problem, Exception? innerException = null)
        : base(Compose(source, tensorName, problem), innerException)
    {
        SourceName = source;
        TensorName = tensorName;
    }

    /// <summary>The file path or payload label the problem was found in, when known.</summary>
    public string? SourceName { get; }

    /// <summary>The tensor at fault, when the problem concerns one tensor.</summary>
    public string? TensorName { get; }

    private static string Compose(string source, string? tensorName, string problem) =>
        tensorName is null ? $"{source}: {problem}" : $"{source}: tensor '{tensorName}': {problem}";
}
