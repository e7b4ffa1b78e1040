namespace FedLora.Kernels.Cpu;

// Token + position embedding: rows in parallel forward; backward scatters rows into the tables,
// so the tasks split the channels instead (no two tasks touch the same float, and each float
// sums its rows in row order whatever the split).
public unsafe partial class CpuBackend
{
    /// <summary>
    /// output[b,t,:] = tokenTable[tokens[b,t],:] + positionTable[t,:]. tokens is (B*T), tokenTable
    /// is (V,C), positionTable is (maxT,C), output is (B,T,C).
    /// </summary>
    protected override void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable,
        BufferView positionTable, BufferView output)
    {
        var rows = b * t;
        if (rows == 0 || c == 0) return;
        fixed (int* tokenAddress = tokens)
        {
            var rowsPerTask = Math.Max(1, Simd.ChunkLength / c);
            var job = new EmbeddingForwardJob(t, c, rows, rowsPerTask, tokenAddress,
                Simd.Address(tokenTable), Simd.Address(positionTable), Simd.Address(output));
            CpuParallel.For((rows + rowsPerTask - 1) / rowsPerTask, ref job);
        }
    }

    /// <summary>
    /// tokenTableGrad[tokens[b,t],:] += outputGrad[b,t,:]; positionTableGrad[t,:] += outputGrad[b,t,:].
    /// outputGrad is (B,T,C), tokenTableGrad (V,C), positionTableGrad (maxT,C).
    /// </summary>
    protected override void EmbeddingBackwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad,
        BufferView? tokenTableGrad, BufferView? positionTableGrad)
    {
        var rows = b * t;
        if (rows == 0 || c == 0 || (tokenTableGrad is null && positionTableGrad is null)) return;
        // Split the channels in 16-float slices only when the op is big enough to pay for waking a worker.
        var slices = (long)rows * c >= 2 * Simd.ChunkLength ? CpuParallel.ThreadCount : 1;
        var sliceWidth = ((c + slices - 1) / slices + 15) / 16 * 16;
        fixed (int* tokenAddress = tokens)
        {
            var job = new EmbeddingBackwardJob(t, c, rows, sliceWidth, tokenAddress, Simd.Address(outputGrad),
                Simd.AddressOrNull(tokenTableGrad), Simd.AddressOrNull(positionTableGrad));
            CpuParallel.For((c + sliceWidth - 1) / sliceWidth, ref job);
        }
    }

    private readonly struct EmbeddingForwardJob(int t, int c, int rows, int rowsPerTask, int* tokens,
        float* tokenTable, float* positionTable, float* output) : IParallelJob
    {
        public void Execute(int index)
        {
            var end = Math.Min(rows, (index + 1) * rowsPerTask);
            for (var row = index * rowsPerTask; row < end; row++)
            {
                Simd.MapRange(default(AddOperator), tokenTable + (long)tokens[row] * c, positionTable + (long)(row % t) * c, null,
                    output + (long)row * c, c);
            }
        }
    }

    private readonly struct EmbeddingBackwardJob(int t, int c, int rows, int sliceWidth, int* tokens,
        float* outputGrad, float* tokenTableGrad, float* positionTableGrad) : IParallelJob
    {
        public void Execute(int index)
        {
            var start = index * sliceWidth;
            var width = Math.Min(sliceWidth, c - start);
            for (var row = 0; row < rows; row++)
            {
                var dy = outputGrad + (long)row * c + start;
                if (tokenTableGrad is not null)
                {
                    var d = tokenTableGrad + (long)tokens[row] * c + start;
                    Simd.MapRange(default(AddOperator), dy, d, null, d, width);
                }
                if (positionTableGrad is not null)
                {
                    var d = positionTableGrad + (long)(row % t) * c + start;
                    Simd.MapRange(default(AddOperator), dy, d, null, d, width);
                }
            }
        }
    }
}
