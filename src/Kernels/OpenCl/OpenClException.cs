using System.Globalization;
using FedLora.Kernels.OpenCl.Native;

namespace FedLora.Kernels.OpenCl;

/// <summary>
/// An OpenCL call failed, or no OpenCL runtime is usable. The message names the cl.h error code
/// (CL_OUT_OF_RESOURCES, CL_BUILD_PROGRAM_FAILURE, ...) and the function that returned it; a failed
/// kernel build carries the compiler's build log.
/// </summary>
public sealed class OpenClException : Exception
{
    /// <summary>An error with a message only (no OpenCL status).</summary>
    public OpenClException() : this("OpenCL failed")
    {
    }

    /// <summary>An error with a message only (no OpenCL status), e.g. no runtime installed.</summary>
    public OpenClException(string message) : base(message)
    {
    }

    /// <summary>An error with a message and its cause.</summary>
    public OpenClException(string message, Exception innerException) : base(message, innerException)
    {
    }

    internal OpenClException(int errorCode, string function, string? detail = null)
        : base(Describe(errorCode, function, detail))
    {
        ErrorCode = errorCode;
        ErrorName = NativeMethods.ErrorName(errorCode);
        Function = function;
    }

    /// <summary>The OpenCL status code (negative), or 0 when the error has no OpenCL status.</summary>
    public int ErrorCode { get; }

    /// <summary>The cl.h name of <see cref="ErrorCode"/>, e.g. "CL_INVALID_ARG_SIZE"; empty without a status.</summary>
    public string ErrorName { get; } = "";

    /// <summary>The OpenCL function that failed, e.g. "clBuildProgram"; empty without a status.</summary>
    public string Function { get; } = "";

    private static string Describe(int errorCode, string function, string? detail)
    {
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{function} failed with {NativeMethods.ErrorName(errorCode)} ({errorCode})");
        return string.IsNullOrEmpty(detail) ? text : text + ": " + detail;
    }
}
