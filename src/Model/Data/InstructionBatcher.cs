using FedLora.Model.Tokenization;

namespace FedLora.Model.Data;

/// <summary>
/// Batches of instruction examples, one example per row, never packed: the attention kernel has
/// no mask between documents, so a packed row would let an example attend to the one before it.
/// </summary>
/// <remarks>
/// <para>A row holds a window of T+1 consecutive tokens of one example, starting at s: inputs
/// are tokens[s, s+T), targets tokens[s+1, s+T+1), and a target counts (is not -1) only when it
/// is a response or end-of-text token (index &gt;= PromptLength). Positions past the example's
/// end are padding: the end-of-text token as input (the byte tokenizer's unless another is given;
/// padding follows the example, so under causal attention its value changes no counted loss), target -1.</para>
/// <para>An example of L tokens that fits (L &lt;= T+1) starts at s = 0. A longer one starts at
/// s = max(0, min(PromptLength - T/2, L - (T+1))): the prompt keeps at most its last T/2
/// tokens (it is cut from the left, so the instruction and "### Response:" survive, see
/// <see cref="InstructionTemplate"/>) unless the response is short, and the response is cut
/// from the right. Every row therefore has at least one counted target.</para>
/// <para>Training visits the examples in epochs, each a fresh Fisher-Yates shuffle drawn from
/// <c>new System.Random(seed)</c>, B examples per batch (a batch may span two epochs), so the
/// sequence of batches is a pure function of the examples, B, T and the seed.</para>
/// </remarks>
public sealed class InstructionBatcher : ITokenBatchSource
{
    private readonly IReadOnlyList<InstructionExample> _examples;
    private readonly int[] _order;
    private readonly Random _random;
    private readonly int _endOfText;
    private int _next;

    /// <summary>Creates a seeded batch stream over <paramref name="examples"/> (kept, not copied).</summary>
    public InstructionBatcher(IReadOnlyList<InstructionExample> examples, int batchSize, int context, int seed, int endOfText = ByteTokenizer.EndOfText)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(context, 1);
        if (examples.Count == 0) throw new ArgumentException("there are no examples to batch", nameof(examples));
        _examples = examples;
        BatchSize = batchSize;
        Context = context;
        _endOfText = endOfText;
        _order = new int[examples.Count];
        _random = new Random(seed);
        Shuffle();
    }

    /// <inheritdoc/>
    public int BatchSize { get; }

    /// <inheritdoc/>
    public int Context { get; }

    /// <summary>How many full epochs have been completed.</summary>
    public int Epoch { get; private set; }

    /// <inheritdoc/>
    public void NextBatch(TokenBatch batch)
    {
        TokenBatch.CheckShape(batch, BatchSize, Context, nameof(InstructionBatcher));
        for (var row = 0; row < BatchSize; row++)
        {
            if (_next == _order.Length)
            {
                Epoch++;
                Shuffle();
            }
            WriteRow(_examples[_order[_next++]], batch, row, _endOfText);
        }
    }

    /// <summary>
    /// Every example once, in order, B per batch; the last batch's unused rows are padding
    /// (<paramref name="endOfText"/> tokens, target -1). For evaluation.
    /// </summary>
    public static IEnumerable<TokenBatch> InOrder(IReadOnlyList<InstructionExample> examples, int batchSize, int context, int endOfText = ByteTokenizer.EndOfText)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(context, 1);
        return Enumerate();

        IEnumerable<TokenBatch> Enumerate()
        {
            for (var first = 0; first < examples.Count; first += batchSize)
            {
                var batch = new TokenBatch(batchSize, context);
                for (var row = 0; row < batchSize; row++)
                {
                    if (first + row < examples.Count) WriteRow(examples[first + row], batch, row, endOfText);
                    else batch.PadRow(row, endOfText);
                }
                yield return batch;
            }
        }
    }

    /// <summary>The first token of the window a row of T positions takes from <paramref name="example"/>.</summary>
    public static int WindowStart(InstructionExample example, int context)
    {
        ArgumentNullException.ThrowIfNull(example);
        var length = example.Tokens.Length;
        if (length <= context + 1) return 0;
        return Math.Max(0, Math.Min(example.PromptLength - context / 2, length - (context + 1)));
    }

    private static void WriteRow(InstructionExample example, TokenBatch batch, int row, int endOfText)
    {
        var tokens = example.Tokens;
        batch.PadRow(row, endOfText);
        var t = batch.Context;
        var start = WindowStart(example, t);
        var inputs = Math.Min(t, tokens.Length - start);
        tokens.AsSpan(start, inputs).CopyTo(batch.Tokens.AsSpan(row * t, inputs));
        for (var i = 0; i < t; i++)
        {
            var target = start + i + 1;
            if (target >= tokens.Length) break;
            if (target >= example.PromptLength) batch.Targets[row * t + i] = tokens[target];
        }
    }

    private void Shuffle()
    {
        for (var i = 0; i < _order.Length; i++) _order[i] = i;
        _random.Shuffle(_order);
        _next = 0;
    }
}
