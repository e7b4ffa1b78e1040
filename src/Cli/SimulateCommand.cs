using System.CommandLine;
using System.Globalization;
using FedLora.Federation;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora simulate</c>: the main job, a federated run of every client in one process.</summary>
internal static class SimulateCommand
{
    public static Command Create()
    {
        var method = new Option<string>("--method")
        {
            Description = $"The federated method: {string.Join(", ", StrategyCatalog.Names)}",
            DefaultValueFactory = _ => "fslora",
        };
        var options = new FederatedOptions();
        var command = new Command("simulate",
            "Run a federated fine-tuning job in one process. With no options: FSLoRA, heterogeneous budgets 64,32,16,16,8,8,4,4,4,4 over Dolly's 10 clients, from the shipped base model")
        {
            method,
        };
        options.AddTo(command);
        command.SetAction(parse => Verb.Run(() =>
        {
            var name = parse.GetValue(method)!.Trim().ToLowerInvariant();
            if (!StrategyCatalog.Names.Contains(name)) throw new UsageException($"--method '{name}' is unknown: choose one of {string.Join(", ", StrategyCatalog.Names)}");
            var job = options.Read(parse, "simulate");
            var data = InstructionData.Load(job.Data, CommonOptions.LoadTokenizer(job.ModelPath));
            job = job.ForClients(data.Clients.Count);
            using var backend = CommonOptions.CreateBackend(job.Device);
            var (simulation, model, budgets) = FederatedRunner.Prepare(name, job, data, backend, privately: job.Dp is not null);
            using (model)
            {
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                    $"simulate: {data.Description}; {job.ClientsPerRound} clients per round, {job.Rounds} rounds x {job.Local.Steps} local steps, on {backend.Description}");
                var run = FederatedRunner.Run(name, simulation, job, budgets, model, data);
                FederatedRunner.WriteResults(job.Output, job, [run]);
                var saved = FederatedRunner.SaveGlobal(simulation, model, job.Output, job.ModelPath);
                if (run.Tasks.Count > 0) AnsiConsole.Write(FederatedRunner.PerRound([run]));
                AnsiConsole.Write(FederatedRunner.Summary([run], TaskMetrics.Headline(data)));
                AnsiConsole.Write(FederatedRunner.Categories([run]));
                AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"results: {Path.Combine(job.Output, "rounds.csv")}, {Path.Combine(job.Output, "results.json")}; global model: {saved}");
            }
            return 0;
        }));
        return command;
    }
}
