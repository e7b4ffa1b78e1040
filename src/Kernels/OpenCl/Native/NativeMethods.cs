using System.Runtime.InteropServices;

namespace FedLora.Kernels.OpenCl.Native;

/// <summary>
/// The OpenCL 1.2 entry points FedLora uses, bound to the ICD loader (libOpenCL.so.1) with
/// source-generated P/Invoke. Names, argument order and types follow cl.h one for one: handles
/// (cl_platform_id, cl_context, cl_mem, ...) are <see cref="nint"/>, size_t is <see cref="nuint"/>,
/// cl_bitfield is <see cref="ulong"/>. Every status code goes through <see cref="Check"/>.
/// </summary>
internal static unsafe partial class NativeMethods
{
    public const string Library = "libOpenCL.so.1";

    // ------------------------------------------------------------ platforms and devices

    [LibraryImport(Library)]
    public static partial int clGetPlatformIDs(uint numEntries, nint* platforms, uint* numPlatforms);

    [LibraryImport(Library)]
    public static partial int clGetPlatformInfo(nint platform, uint paramName, nuint paramValueSize, void* paramValue, nuint* paramValueSizeRet);

    [LibraryImport(Library)]
    public static partial int clGetDeviceIDs(nint platform, ulong deviceType, uint numEntries, nint* devices, uint* numDevices);

    [LibraryImport(Library)]
    public static partial int clGetDeviceInfo(nint device, uint paramName, nuint paramValueSize, void* paramValue, nuint* paramValueSizeRet);

    // ------------------------------------------------------------ contexts and queues

    [LibraryImport(Library)]
    public static partial nint clCreateContext(nint* properties, uint numDevices, nint* devices, nint pfnNotify, nint userData, int* errcodeRet);

    [LibraryImport(Library)]
    public static partial int clReleaseContext(nint context);

    [LibraryImport(Library)]
    public static partial nint clCreateCommandQueue(nint context, nint device, ulong properties, int* errcodeRet);

    [LibraryImport(Library)]
    public static partial int clReleaseCommandQueue(nint commandQueue);

    [LibraryImport(Library)]
    public static partial int clFinish(nint commandQueue);

    // ------------------------------------------------------------ buffers

    [LibraryImport(Library)]
    public static partial nint clCreateBuffer(nint context, ulong flags, nuint size, void* hostPtr, int* errcodeRet);

    [LibraryImport(Library)]
    public static partial int clReleaseMemObject(nint memobj);

    [LibraryImport(Library)]
    public static partial int clEnqueueReadBuffer(nint commandQueue, nint buffer, uint blockingRead, nuint offset, nuint size, void* ptr,
        uint numEventsInWaitList, nint* eventWaitList, nint* @event);

    [LibraryImport(Library)]
    public static partial int clEnqueueWriteBuffer(nint commandQueue, nint buffer, uint blockingWrite, nuint offset, nuint size, void* ptr,
        uint numEventsInWaitList, nint* eventWaitList, nint* @event);

    [LibraryImport(Library)]
    public static partial int clEnqueueCopyBuffer(nint commandQueue, nint srcBuffer, nint dstBuffer, nuint srcOffset, nuint dstOffset, nuint size,
        uint numEventsInWaitList, nint* eventWaitList, nint* @event);

    [LibraryImport(Library)]
    public static partial int clEnqueueFillBuffer(nint commandQueue, nint buffer, void* pattern, nuint patternSize, nuint offset, nuint size,
        uint numEventsInWaitList, nint* eventWaitList, nint* @event);

    // ------------------------------------------------------------ programs and kernels

    [LibraryImport(Library)]
    public static partial nint clCreateProgramWithSource(nint context, uint count, byte** strings, nuint* lengths, int* errcodeRet);

    [LibraryImport(Library)]
    public static partial int clBuildProgram(nint program, uint numDevices, nint* deviceList, byte* options, nint pfnNotify, nint userData);

    [LibraryImport(Library)]
    public static partial int clGetProgramBuildInfo(nint program, nint device, uint paramName, nuint paramValueSize, void* paramValue,
        nuint* paramValueSizeRet);

    [LibraryImport(Library)]
    public static partial int clReleaseProgram(nint program);

    [LibraryImport(Library)]
    public static partial nint clCreateKernel(nint program, byte* kernelName, int* errcodeRet);

    [LibraryImport(Library)]
    public static partial int clReleaseKernel(nint kernel);

    [LibraryImport(Library)]
    public static partial int clSetKernelArg(nint kernel, uint argIndex, nuint argSize, void* argValue);

    [LibraryImport(Library)]
    public static partial int clGetKernelWorkGroupInfo(nint kernel, nint device, uint paramName, nuint paramValueSize, void* paramValue,
        nuint* paramValueSizeRet);

    [LibraryImport(Library)]
    public static partial int clEnqueueNDRangeKernel(nint commandQueue, nint kernel, uint workDim, nuint* globalWorkOffset,
        nuint* globalWorkSize, nuint* localWorkSize, uint numEventsInWaitList, nint* eventWaitList, nint* @event);
}
