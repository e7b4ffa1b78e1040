using FedLora.Kernels.Ilgpu;
using FedLora.Kernels.Tests.Conformance;

namespace FedLora.Kernels.Tests.Ilgpu;

/// <summary>
/// The row kernels (layernorm, attention's softmax and its backward, cross-entropy) reduce each row
/// across a group of threads through shared memory. On ILGPU's CPU accelerator the conformance suite
/// runs them in groups of one thread (the accelerator hands off between OS threads at every barrier,
/// which makes bigger groups slow), where the reduction tree takes no step; here the same conformance
/// tests run with groups of 8 threads, on rows shorter than, equal to and longer than the group, so
/// that the tree a GPU runs is exercised too.
/// </summary>
public class IlgpuRowGroupTests
{
    /// <summary>The <see cref="TestBackends"/> name of ILGPU's CPU accelerator with row groups of 8 threads.</summary>
    public const string Backend = "ilgpu-cpu-rows-of-8";

    internal static IlgpuBackend Create()
    {
        var backend = IlgpuBackend.Create(IlgpuDevices.CpuSpec);
        backend.RowGroupSize = 8;
        return backend;
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 5)]
    [InlineData(2, 19)]
    public void RowKernels_GroupsOfEight_MatchReference(int n, int c)
    {
        var ops = new TransformerOpsTests();
        ops.LayerNormForward_OddShapes_MatchesReference(Backend, n, c);
        ops.LayerNormBackward_OddShapes_AccumulatesLikeReference(Backend, n, c);
        ops.CrossEntropy_OddShapesWithIgnoredTargets_MatchesReference(Backend, n, c);
    }

    [Theory]
    [InlineData(1, 3, 2, 1)]
    [InlineData(1, 11, 6, 2)]
    public void Attention_GroupsOfEight_MatchesReference(int b, int t, int c, int heads)
    {
        var ops = new TransformerOpsTests();
        ops.AttentionForward_OddShapes_MatchesReference(Backend, b, t, c, heads);
        ops.AttentionBackward_OddShapes_AccumulatesOrOverwritesLikeReference(Backend, b, t, c, heads);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(512)]
    public void RowGroupSize_NotAPowerOfTwoOrTooLarge_Throws(int size)
    {
        var backend = (IlgpuBackend)TestBackends.Get(Backend);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => backend.RowGroupSize = size);
        Assert.Contains("power of two", error.Message, StringComparison.Ordinal);
        Assert.Equal(8, backend.RowGroupSize);
    }
}
