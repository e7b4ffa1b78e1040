using System.CommandLine;
using FedLora.Kernels;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora devices</c>: the backends this machine can run.</summary>
internal static class DevicesCommand
{
    private static readonly string[] HostBackends = ["cpu", "reference"];

    public static Command Create()
    {
        var command = new Command("devices", "List the compute backends and devices available here");
        command.SetAction(_ => Verb.Run(() =>
        {
            var table = new Table().AddColumns("--device", "description");
            foreach (var name in HostBackends)
            {
                using var backend = Backends.Create(name);
                table.AddRow(name, Markup.Escape(backend.Description));
            }
            AnsiConsole.Write(table);
            return 0;
        }));
        return command;
    }
}
