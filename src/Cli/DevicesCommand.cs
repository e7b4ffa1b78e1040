using System.CommandLine;
using System.Globalization;
using FedLora.Kernels;
using FedLora.Kernels.Ilgpu;
using ILGPU.Runtime;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary>
/// <c>fedlora devices</c>: the host backends and the ILGPU accelerators this machine can run, with the
/// <c>--device</c> value, memory and group sizes of each, and the OpenCL devices ILGPU cannot use, with the reason.
/// </summary>
internal static class DevicesCommand
{
    private static readonly string[] HostBackends = ["cpu", "reference"];

    public static Command Create()
    {
        var command = new Command("devices",
            "List the compute backends and ILGPU devices available here, with the --device value that selects each, and the OpenCL devices ILGPU cannot use");
        command.SetAction(_ => Verb.Run(() =>
        {
            var table = new Table().AddColumns("--device", "kind", "description", "compute units", "memory", "groups");
            foreach (var name in HostBackends)
            {
                using var backend = Backends.Create(name);
                table.AddRow(name, "host", Markup.Escape(backend.Description), Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture), "", "");
            }
            foreach (var device in IlgpuDevices.List())
            {
                table.AddRow(device.Spec, $"ILGPU {device.Kind}", Markup.Escape(device.Name),
                    device.Multiprocessors.ToString(CultureInfo.InvariantCulture),
                    device.Kind == AcceleratorType.CPU ? "host memory" : $"{device.MemoryBytes >> 20} MiB",
                    string.Create(CultureInfo.InvariantCulture, $"up to {device.MaxGroupSize} threads, warp {device.WarpSize}"));
            }
            AnsiConsole.Write(table);
            foreach (var device in IlgpuDevices.UnusableOpenClDevices())
            {
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                    $"[yellow]Not usable by ILGPU:[/] OpenCL device {device.Name} ({device.Platform}): {device.Reason}");
            }
            return 0;
        }));
        return command;
    }
}
