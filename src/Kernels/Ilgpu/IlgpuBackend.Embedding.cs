using ILGPU;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Token and position embeddings. The token-table gradient is deterministic without atomics: the host
// groups the B*T rows by token id (a counting sort, O(B*T + V)), and one thread per (distinct token,
// channel) adds its rows in ascending order, the order the reference adds them in.
public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? _embeddingForward;
    private Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>? _embeddingBackwardTokens;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int>? _embeddingBackwardPositions;

    /// <summary>Host staging for the counting sort, grown on demand: counts (V), then the groups uploaded.</summary>
    private int[] _tokenGroups = [];

    /// <summary>
    /// One thread per element (r, p) of the (B*T, C) output, r = b T + s: y[r,p] = wte[tokens[r],p] + wpe[s,p].
    /// tokens is (B*T), wte (V,C), wpe (maxT,C), y (B,T,C).
    /// </summary>
    private static void EmbeddingForwardKernel(Index1D e, ArrayView<int> tokens, ArrayView<float> wte, ArrayView<float> wpe,
        ArrayView<float> y, int t, int c)
    {
        var (r, p) = (e.X / c, e.X % c);
        y[e] = wte[(long)tokens[r] * c + p] + wpe[(long)(r % t) * c + p];
    }

    /// <summary>
    /// One thread per element (u, p) of a distinct token's gradient row:
    /// dwte[ids[u],p] += sum_{x in [start[u], start[u+1])} dy[rows[x],p], in ascending x. groups holds
    /// ids (U), start (U+1) and rows (B*T) one after another; dy is (B*T,C), dwte (V,C).
    /// </summary>
    private static void EmbeddingBackwardTokensKernel(Index1D e, ArrayView<int> groups, ArrayView<float> dy, ArrayView<float> dwte,
        int distinct, int c)
    {
        var (u, p) = (e.X / c, e.X % c);
        var rows = 2 * distinct + 1;
        var at = (long)groups[u] * c + p;
        var sum = dwte[at];
        for (var x = groups[distinct + u]; x < groups[distinct + u + 1]; x++) sum += dy[(long)groups[rows + x] * c + p];
        dwte[at] = sum;
    }

    /// <summary>
    /// One thread per element (s, p) of the first T rows of the position table: dwpe[s,p] += sum_b dy[b,s,p], in
    /// ascending b. dy is (B,T,C), dwpe (maxT,C).
    /// </summary>
    private static void EmbeddingBackwardPositionsKernel(Index1D e, ArrayView<float> dy, ArrayView<float> dwpe, int b, int t, int c)
    {
        var sum = dwpe[e];
        for (var bb = 0; bb < b; bb++) sum += dy[(long)bb * t * c + e.X];
        dwpe[e] = sum;
    }

    /// <inheritdoc/>
    protected override void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable,
        BufferView positionTable, BufferView output)
    {
        var rows = b * t;
        if (rows == 0 || c == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _embeddingForward, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<int>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(EmbeddingForwardKernel, group));
            var ids = UploadInts(tokens);
            Launch(nameof(EmbeddingForward), () => kernel(rows * c, ids, View(tokenTable), View(positionTable), View(output), t, c));
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
            if (tokenTableGrad is { } dwte)
            {
                var kernel = ElementKernel(ref _embeddingBackwardTokens, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D,
                    ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>(EmbeddingBackwardTokensKernel, group));
                var distinct = GroupRowsByToken(tokens, vocab, out var groups);
                var uploaded = UploadInts(groups);
                Launch(nameof(EmbeddingBackward), () => kernel(distinct * c, uploaded, View(outputGrad), View(dwte), distinct, c));
            }
            if (positionTableGrad is { } dwpe)
            {
                var kernel = ElementKernel(ref _embeddingBackwardPositions, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D,
                    ArrayView<float>, ArrayView<float>, int, int, int>(EmbeddingBackwardPositionsKernel, group));
                Launch(nameof(EmbeddingBackward), () => kernel(t * c, View(outputGrad), View(dwpe), b, t, c));
            }
        }
    }

    /// <summary>
    /// Lays out, after V counters, the distinct token ids in ascending order (U of them), their start
    /// offsets (U+1) and the row numbers grouped by token, ascending within a group (B*T). Returns U.
    /// </summary>
    private int GroupRowsByToken(ReadOnlySpan<int> tokens, int vocab, out ReadOnlySpan<int> groups)
    {
        var rows = tokens.Length;
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
}
