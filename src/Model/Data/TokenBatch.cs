namespace FedLora.Model.Data;

/// <summary>
/// One (B,T) training batch: row-major input tokens and next-token targets, target -1 where the
/// loss must not count the position (prompts, padding). Batch sources refill it in place.
/// </summary>
public sealed class TokenBatch
{
    /// <summary>Allocates a batch of <paramref name="batchSize"/> rows of <paramref name="context"/> positions.</summary>
    public TokenBatch(int batchSize, int context)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(context, 1);
        BatchSize = batchSize;
        Context = context;
        Tokens = new int[batchSize * context];
        Targets = new int[batchSize * context];
    }

    /// <summary>B, the number of rows.</summary>
    public int BatchSize { get; }

    /// <summary>T, the number of positions per row.</summary>
    public int Context { get; }

    /// <summary>Input tokens, (B,T) row-major: row b position t is at b*T + t.</summary>
    public int[] Tokens { get; }

    /// <summary>Targets, (B,T): the token that should follow position t, or -1 (not counted).</summary>
    public int[] Targets { get; }

    /// <summary>The number of targets that are not -1 (the denominator of the mean loss).</summary>
    public int CountTargets()
    {
        var count = 0;
        foreach (var target in Targets)
        {
            if (target != -1) count++;
        }
        return count;
    }

    internal static void CheckShape(TokenBatch batch, int batchSize, int context, string source)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.BatchSize != batchSize || batch.Context != context)
        {
            throw new ArgumentException(
                $"batch is (B,T) = ({batch.BatchSize},{batch.Context}), but {source} makes ({batchSize},{context})", nameof(batch));
        }
    }

    /// <summary>Fills row <paramref name="row"/> with padding: <paramref name="endOfText"/> tokens, no counted targets.</summary>
    internal void PadRow(int row, int endOfText)
    {
        Tokens.AsSpan(row * Context, Context).Fill(endOfText);
        Targets.AsSpan(row * Context, Context).Fill(-1);
    }
}

/// <summary>An endless, seeded stream of (B,T) batches for training.</summary>
public interface ITokenBatchSource
{
    /// <summary>B, the rows of every batch.</summary>
    int BatchSize { get; }

    /// <summary>T, the positions of every row.</summary>
    int Context { get; }

    /// <summary>Overwrites <paramref name="batch"/> (which must be (B,T)) with the next batch.</summary>
    void NextBatch(TokenBatch batch);
}
