namespace FedLora.Lora.Safetensors;

/// <summary>Limits a safetensors reader enforces before it trusts a file.</summary>
public sealed record SafetensorsReadOptions
{
    /// <summary>The largest header accepted by default: 100 MB, the reference implementation's limit.</summary>
    public const int DefaultMaxHeaderBytes = 100_000_000;

    /// <summary>Default limits: headers up to 100 MB, files up to the largest byte array (about 2 GiB).</summary>
    public static SafetensorsReadOptions Default { get; } = new();

    /// <summary>Files (or payloads) larger than this are refused before being read.</summary>
    public long MaxFileBytes { get; init; } = Array.MaxLength;

    /// <summary>Headers whose declared length exceeds this are refused before being parsed.</summary>
    public long MaxHeaderBytes { get; init; } = DefaultMaxHeaderBytes;
}
