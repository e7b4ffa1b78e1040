namespace FedLora.Kernels.OpenCl;

// Token and position embeddings (Embedding.cl). The token-table gradient avoids float atomics: the
// host groups the B*T rows by token id (a counting sort, O(B*T + V)), and one work-item per
// (distinct token, channel) adds its rows in ascending order, the order the reference adds them in.
public sealed partial class OpenClBackend
{
    private EmbeddingKernels? _embedding;

    /// <summary>Host staging for the counting sort, grown on demand: counts (V), then the uploaded groups.</summary>
    private int[] _tokenGroups = [];

    private EmbeddingKernels Embedding => _embedding ??= new EmbeddingKernels(BuildProgram("Embedding"));

    /// <inheritdoc/>
    protected override void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable,
        BufferView positionTable, BufferView output)
    {
        var rows = b * t;
        if (rows == 0 || c == 0) return;
        lock (_gate)
        {
            var kernel = Embedding.Forward;
            var ids = UploadInts(tokens);
            Run(kernel, rows * c, rows, t, c, ids, tokenTable, positionTable, output);
        }
    }

    /// <inheritdoc/>
    protected override void EmbeddingBackwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad,
        BufferView? tokenTableGrad, BufferView? positionTableGrad)
    {
        var rows = b * t;
        if (rows == 0 || c == 0) return;
        lock (_gate)
        {
            var kernels = Embedding;
            if (tokenTableGrad is { } dwte)
            {
                var distinct = GroupRowsByToken(tokens, vocab, out var groups);
                Run(kernels.BackwardTokens, distinct * c, distinct, c, UploadInts(groups), outputGrad, dwte);
            }
            if (positionTableGrad is { } dwpe) Run(kernels.BackwardPositions, t * c, b, t, c, outputGrad, dwpe);
        }
    }

    /// <summary>
    /// Lays out, after V counters, the distinct token ids in ascending order (U of them), their start
    /// offsets (U+1) and the row numbers grouped by token, ascending within a group (B*T). Returns U.
    /// </summary>
    private int GroupRowsByToken(ReadOnlySpan<int> tokens, int vocab, out ReadOnlySpan<int> groups)
    {
        var rows = tokens.Length;
        // Counters (V), then ids (U), starts (U+1) and rows (B*T), with U <= min(V, B*T).
        var needed = vocab + 2 * Math.Min(vocab, rows) + 1 + rows;
        if (_tokenGroups.Length < needed) _tokenGroups = new int[Math.Max(needed, 2 * _tokenGroups.Length)];
        var counts = _tokenGroups.AsSpan(0, vocab);
        counts.Clear();
        foreach (var token in tokens) counts[token]++;
        var distinct = 0;
        foreach (var count in counts)
        {
            if (count > 0) distinct++;
        }
        var layout = _tokenGroups.AsSpan(vocab, 2 * distinct + 1 + rows);
        var ids = layout[..distinct];
        var start = layout.Slice(distinct, distinct + 1);
        var grouped = layout[(2 * distinct + 1)..];
        var u = 0;
        var offset = 0;
        for (var v = 0; v < vocab; v++)
        {
            if (counts[v] == 0) continue;
            ids[u] = v;
            start[u] = offset;
            offset += counts[v];
            // From here on counts[v] is the next free slot of token v's group.
            counts[v] = start[u];
            u++;
        }
        start[distinct] = offset;
        for (var r = 0; r < rows; r++) grouped[counts[tokens[r]]++] = r;
        groups = layout;
        return distinct;
    }

    private sealed class EmbeddingKernels(OpenClProgram program)
    {
        public OpenClKernel Forward { get; } = program.Kernel("embedding_forward");
        public OpenClKernel BackwardTokens { get; } = program.Kernel("embedding_backward_tokens");
        public OpenClKernel BackwardPositions { get; } = program.Kernel("embedding_backward_positions");
    }
}
