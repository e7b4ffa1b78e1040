using System.CommandLine;
using System.Globalization;
using FedLora.Kernels;
using FedLora.Kernels.OpenCl;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora devices</c>: the backends and OpenCL devices this machine can run.</summary>
internal static class DevicesCommand
{
    private static readonly string[] HostBackends = ["cpu", "reference"];

    public static Command Create()
    {
        var command = new Command("devices", "List the compute backends and OpenCL devices available here, with the --device value that selects each");
        command.SetAction(_ => Verb.Run(() =>
        {
            var table = new Table().AddColumns("--device", "kind", "description", "compute units", "memory");
            foreach (var name in HostBackends)
            {
                using var backend = Backends.Create(name);
                table.AddRow(name, "host", Markup.Escape(backend.Description), Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture), "");
            }
            string? unavailable = null;
            try
            {
                foreach (var device in OpenClDevices.List())
                {
                    table.AddRow(device.Spec, $"OpenCL {Markup.Escape(device.Type)}",
                        Markup.Escape($"{device.Name} ({device.Vendor}; {device.Platform}; {device.OpenClCVersion})"),
                        device.ComputeUnits.ToString(CultureInfo.InvariantCulture), $"{device.GlobalMemoryBytes >> 20} MiB");
                }
            }
            catch (OpenClException e)
            {
                unavailable = e.Message;
            }
            AnsiConsole.Write(table);
            if (unavailable is not null) AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"[yellow]OpenCL:[/] {unavailable}");
            return 0;
        }));
        return command;
    }
}
