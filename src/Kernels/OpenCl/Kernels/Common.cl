// Shared by every kernel family: prepended to each family's source when its program is built.
//
// Conventions (OpenCL C 1.2, no generic address space, no float atomics):
// - every tensor argument is a pair (__global float* x, const int xo): the buffer and the offset of
//   the op's view in floats, so that views of one large buffer need no sub-buffers;
// - one work-item per output element unless a kernel says otherwise, and every output element is
//   written by exactly one work-item, so results do not depend on scheduling;
// - kernels launched over a rounded-up range return early past the end (only those without barriers).

// The sum of v over the work-group, returned to every work-item. The work-group size must be a power
// of two, scratch must hold one float per work-item, and every work-item of the group must call it.
float group_sum(__local float* scratch, float v)
{
    const int lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = get_local_size(0) / 2; stride > 0; stride >>= 1)
    {
        if (lid < stride) scratch[lid] += scratch[lid + stride];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

// The maximum of v over the work-group, under the same rules as group_sum.
float group_max(__local float* scratch, float v)
{
    const int lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = get_local_size(0) / 2; stride > 0; stride >>= 1)
    {
        if (lid < stride) scratch[lid] = fmax(scratch[lid], scratch[lid + stride]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}
