using FedLora.Model.Tokenization;

namespace FedLora.Model.Data;

/// <summary>
/// Batches of plain text (Tiny Shakespeare) for next-token training. The token stream is cut into
/// W = (n - 1) / T non-overlapping windows; window k is inputs tokens[kT, kT+T) and targets
/// tokens[kT+1, kT+T+1), every target counted. Training visits the windows in epochs, each a
/// fresh Fisher-Yates shuffle drawn from <c>new System.Random(seed)</c>, B windows per batch (a
/// batch may span two epochs), so the sequence of batches is a pure function of the tokens, B, T
/// and the seed.
/// </summary>
public sealed class TextBatcher : ITokenBatchSource
{
    private readonly int[] _tokens;
    private readonly int[] _order;
    private readonly Random _random;
    private int _next;

    /// <summary>Creates a seeded batch stream over <paramref name="tokens"/> (which it keeps, not copies).</summary>
    /// <exception cref="ArgumentException">The text is shorter than one window of T+1 tokens.</exception>
    public TextBatcher(int[] tokens, int batchSize, int context, int seed)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(context, 1);
        _tokens = tokens;
        BatchSize = batchSize;
        Context = context;
        WindowCount = WindowsIn(tokens.Length, context);
        _order = new int[WindowCount];
        _random = new Random(seed);
        Shuffle();
    }

    /// <inheritdoc/>
    public int BatchSize { get; }

    /// <inheritdoc/>
    public int Context { get; }

    /// <summary>W, the number of T-token windows in the text (one epoch).</summary>
    public int WindowCount { get; }

    /// <summary>How many full epochs have been completed.</summary>
    public int Epoch { get; private set; }

    /// <inheritdoc/>
    public void NextBatch(TokenBatch batch)
    {
        TokenBatch.CheckShape(batch, BatchSize, Context, nameof(TextBatcher));
        for (var row = 0; row < BatchSize; row++)
        {
            if (_next == _order.Length)
            {
                Epoch++;
                Shuffle();
            }
            CopyWindow(_tokens, _order[_next++], batch, row);
        }
    }

    /// <summary>
    /// Every window once, in text order, B per batch; the last batch's unused rows are padding
    /// (<paramref name="endOfText"/> tokens, target -1). For evaluation: the mean loss over the counted
    /// targets is the held-out loss.
    /// </summary>
    public static IEnumerable<TokenBatch> InOrder(int[] tokens, int batchSize, int context, int endOfText = ByteTokenizer.EndOfText)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(context, 1);
        var windows = WindowsIn(tokens.Length, context);
        return Enumerate();

        IEnumerable<TokenBatch> Enumerate()
        {
            for (var first = 0; first < windows; first += batchSize)
            {
                var batch = new TokenBatch(batchSize, context);
                for (var row = 0; row < batchSize; row++)
                {
                    if (first + row < windows) CopyWindow(tokens, first + row, batch, row);
                    else batch.PadRow(row, endOfText);
                }
                yield return batch;
            }
        }
    }

    private static int WindowsIn(int tokenCount, int context)
    {
        var windows = (tokenCount - 1) / context;
        if (tokenCount < 1 || windows < 1)
        {
            throw new ArgumentException($"the text has {tokenCount} tokens, fewer than one window of T+1 = {context + 1}");
        }
        return windows;
    }

    private static void CopyWindow(int[] tokens, int window, TokenBatch batch, int row)
    {
        var t = batch.Context;
        tokens.AsSpan(window * t, t).CopyTo(batch.Tokens.AsSpan(row * t, t));
        tokens.AsSpan(window * t + 1, t).CopyTo(batch.Targets.AsSpan(row * t, t));
    }

    private void Shuffle()
    {
        for (var i = 0; i < _order.Length; i++) _order[i] = i;
        _random.Shuffle(_order);
        _next = 0;
    }
}
