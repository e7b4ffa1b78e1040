using System.CommandLine;
using System.Globalization;
using FedLora.Cli;
using FedLora.Lora.Safetensors;
using Spectre.Console;

var root = new RootCommand(
    "FedLora: federated LoRA fine-tuning of a GPT across clients of unequal means (FSLoRA, FLoRA, FedIT, zero-padding, HetLoRA, FlexLoRA, FFA-LoRA).")
{
    SimulateCommand.Create(),
    ServeCommand.Create(),
    JoinCommand.Create(),
    CompareCommand.Create(),
    PretrainCommand.Create(),
    FinetuneCommand.Create(),
    GenerateCommand.Create(),
    EvaluateCommand.Create(),
    DevicesCommand.Create(),
};
// With no terminal (output redirected to a file or a pipe) Spectre.Console assumes 80 columns and wraps
// tables inside their cells; a file has no width, so tables keep their natural width unless COLUMNS says otherwise.
if (Console.IsOutputRedirected && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("COLUMNS"))) AnsiConsole.Profile.Width = 1000;
return root.Parse(args).Invoke();

namespace FedLora.Cli
{
    /// <summary>Runs a verb's body, turning failures into a one-line message and an exit code instead of a stack trace.</summary>
    internal static class Verb
    {
        public static int Run(Func<int> body)
        {
            try
            {
                return body();
            }
            catch (UsageException e)
            {
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"[red]error:[/] {e.Message}");
                return 2;
            }
            catch (Exception e) when (e is ArgumentException or InvalidDataException or SafetensorsFormatException or FileNotFoundException
                                          or DirectoryNotFoundException or InvalidOperationException or IOException or UnauthorizedAccessException)
            {
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"[red]error:[/] {e.Message}");
                return 1;
            }
        }
    }
}
