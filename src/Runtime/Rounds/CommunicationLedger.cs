namespace FedLora.Runtime;

/// <summary>Bytes one client received and sent in one round, as serialized payloads.</summary>
/// <param name="Round">The round.</param>
/// <param name="ClientId">The client.</param>
/// <param name="DownloadBytes">Assignment plus any broadcast every client must apply (FLoRA's merged update).</param>
/// <param name="UploadBytes">The client's update (0 when it was not sampled).</param>
public readonly record struct LedgerEntry(int Round, int ClientId, long DownloadBytes, long UploadBytes);

/// <summary>Communication per client per round, in bytes actually serialized, download and upload apart.</summary>
public sealed class CommunicationLedger
{
    private readonly List<LedgerEntry> _entries = [];

    /// <summary>Every entry, in the order recorded.</summary>
    public IReadOnlyList<LedgerEntry> Entries => _entries;

    /// <summary>Adds bytes for a client in a round (entries for the same pair add up).</summary>
    public void Record(int round, int clientId, long downloadBytes, long uploadBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(downloadBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(uploadBytes);
        _entries.Add(new LedgerEntry(round, clientId, downloadBytes, uploadBytes));
    }

    /// <summary>Total bytes downloaded by all clients (in one round when given).</summary>
    public long TotalDownload(int? round = null) => _entries.Where(e => round is null || e.Round == round).Sum(e => e.DownloadBytes);

    /// <summary>Total bytes uploaded by all clients (in one round when given).</summary>
    public long TotalUpload(int? round = null) => _entries.Where(e => round is null || e.Round == round).Sum(e => e.UploadBytes);
}
