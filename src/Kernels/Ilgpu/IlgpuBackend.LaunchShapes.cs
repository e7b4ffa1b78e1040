using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// How the element-wise and row kernels are launched: one kernel source, with group sizes chosen
// per accelerator. ILGPU's CPU accelerator emulates a group with one OS thread per GPU thread and runs
// the groups one after another, handing off between those threads for every group (and at every
// barrier); on this 2-core machine an element-wise kernel over 65,536 floats took ~9 ms in groups of
// one thread, ~700 ms in groups of two and ~1.8 s auto-grouped. So on the CPU accelerator every kernel
// here runs in groups of one thread (a row reduction's tree then takes no step), unless RowGroupSize
// is raised, as the tests do to run the reduction trees on the CPU accelerator too.
public sealed partial class IlgpuBackend
{
    /// <summary>Threads per group of an element-wise kernel on a GPU.</summary>
    private const int GpuGroupSize = 256;

    /// <summary>The most threads a row-reduction group may have: the length of its shared scratch.</summary>
    internal const int MaxRowGroupSize = 256;

    private int _rowGroupSize;

    /// <summary>Threads per group of the element-wise kernels (index first, implicitly grouped).</summary>
    private int ElementGroupSize => IsCpuAccelerator ? 1 : Math.Min(GpuGroupSize, MaxGroupSize);

    /// <summary>
    /// Threads per group of the row kernels (one group per row, reductions through shared memory): a
    /// power of two up to <see cref="MaxRowGroupSize"/>; 1 on the CPU accelerator unless set.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a power of two, or more than the device or the shared scratch allows.</exception>
    internal int RowGroupSize
    {
        get => _rowGroupSize != 0 ? _rowGroupSize : IsCpuAccelerator ? 1 : Math.Min(MaxRowGroupSize, 1 << (31 - int.LeadingZeroCount(MaxGroupSize)));
        set
        {
            var limit = Math.Min(MaxRowGroupSize, MaxGroupSize);
            if (value < 1 || value > limit || (value & (value - 1)) != 0)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, $"a row group must be a power of two from 1 to {limit} threads");
            }
            _rowGroupSize = value;
        }
    }

    /// <summary>The launch of a row kernel: one group of <see cref="RowGroupSize"/> threads per row.</summary>
    private KernelConfig RowLaunch(int rows) => new(rows, RowGroupSize);

    /// <summary>
    /// Loads an element-wise kernel (index first) in groups of <see cref="ElementGroupSize"/>; a kernel
    /// thread past the extent is not run.
    /// </summary>
    private TDelegate ElementKernel<TDelegate>(ref TDelegate? cache, Func<Accelerator, int, TDelegate> load)
        where TDelegate : class
    {
        var groupSize = ElementGroupSize;
        return Kernel(ref cache, a => load(a, groupSize));
    }

    /// <summary>
    /// The sum of <paramref name="value"/> over the group, returned to every thread: a tree in shared
    /// memory, so that the order of the additions depends on the group size only, never on scheduling
    /// (ILGPU.Algorithms' group AllReduce adds with atomics on the CPU accelerator, in whatever order the
    /// threads arrive). Every thread of the group must call it; scratch holds one float per thread.
    /// </summary>
    private static float GroupSum(ArrayView<float> scratch, float value)
    {
        var lane = Group.IdxX;
        scratch[lane] = value;
        Group.Barrier();
        for (var stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (lane < stride) scratch[lane] += scratch[lane + stride];
            Group.Barrier();
        }
        var total = scratch[0];
        Group.Barrier();
        return total;
    }

    /// <summary>The maximum of <paramref name="value"/> over the group, under the rules of <see cref="GroupSum"/>.</summary>
    private static float GroupMax(ArrayView<float> scratch, float value)
    {
        var lane = Group.IdxX;
        scratch[lane] = value;
        Group.Barrier();
        for (var stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (lane < stride) scratch[lane] = XMath.Max(scratch[lane], scratch[lane + stride]);
            Group.Barrier();
        }
        var total = scratch[0];
        Group.Barrier();
        return total;
    }
}
