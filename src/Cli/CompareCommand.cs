using System.CommandLine;
using System.Globalization;
using FedLora.Federation;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora compare</c>: several methods on the same data, seeds and budgets.</summary>
internal static class CompareCommand
{
    public static Command Create()
    {
        var methods = new Option<string>("--methods")
        {
            Description = $"Comma-separated methods to compare; default all: {string.Join(",", StrategyCatalog.Names)}",
            DefaultValueFactory = _ => string.Join(",", StrategyCatalog.Names),
        };
        var options = new FederatedOptions();
        var command = new Command("compare",
            "Run several federated methods on the same data, seeds and budgets; print a side-by-side table and write plots of held-out loss (and, with --eval-every, the task metric) per round. With --dp-*, each method also runs with differential privacy (NAME+dp), side by side with its run without")
        {
            methods,
        };
        options.AddTo(command);
        command.SetAction(parse => Verb.Run(() =>
        {
            var names = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(n => n.ToLowerInvariant()).Distinct().ToArray();
            var unknown = names.Where(n => !StrategyCatalog.Names.Contains(n)).ToArray();
            if (names.Length == 0 || unknown.Length > 0)
            {
                throw new UsageException($"--methods: unknown {string.Join(", ", unknown)}; choose from {string.Join(", ", StrategyCatalog.Names)}");
            }
            var job = options.Read(parse, "compare");
            var data = InstructionData.Load(job.Data, CommonOptions.LoadTokenizer(job.ModelPath));
            job = job.ForClients(data.Clients.Count);
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"data: {data.Description}");
            using var backend = CommonOptions.CreateBackend(job.Device);
            // With DP every method runs twice, without and with it; FLoRA, which has no private aggregation, only without.
            var variants = names.SelectMany(name => job.Dp is null || name == "flora" ? new[] { (name, false) } : [(name, false), (name, true)]).ToArray();
            if (job.Dp is not null && names.Contains("flora"))
            {
                AnsiConsole.MarkupLine("flora runs without DP only: it stacks each client's factors, so the server never forms a sum to noise");
            }
            // Build every run once first, so that a bad budget for any of them fails before hours of training.
            foreach (var (name, privately) in variants) FederatedRunner.Prepare(name, job, data, backend, privately).Model.Dispose();

            var runs = new List<MethodRun>();
            foreach (var (name, privately) in variants)
            {
                var (simulation, model, budgets) = FederatedRunner.Prepare(name, job, data, backend, privately);
                using (model) runs.Add(FederatedRunner.Run(privately ? name + "+dp" : name, simulation, job, budgets, model, data));
            }
            FederatedRunner.WriteResults(job.Output, job, runs);
            var plotPath = Path.Combine(job.Output, "heldout-loss.svg");
            var series = runs.Select(run => (run.Method, (IReadOnlyList<(double, double)>)
                [(0.0, run.Initial["all"]), .. run.Rounds.Select(r => ((double)(r.Round + 1), r.Evaluation["all"]))])).ToList();
            FederatedRunner.WriteAtomically(plotPath, SvgPlot.Lines("Held-out loss of the global model (test set)", "round", "loss per target token", series));
            var headline = TaskMetrics.Headline(data);
            var plots = plotPath;
            if (runs.Any(r => r.Tasks.Count > 0))
            {
                var metricPath = Path.Combine(job.Output, "task-metric.svg");
                var metricSeries = runs.Select(run => (run.Method, (IReadOnlyList<(double, double)>)
                    [.. run.Tasks.Select(t => ((double)t.Round, t.Value(headline)))])).ToList();
                FederatedRunner.WriteAtomically(metricPath, SvgPlot.Lines($"Task metric of the global model: {headline} (test set)", "round", headline, metricSeries));
                plots += ", " + metricPath;
                AnsiConsole.Write(FederatedRunner.PerRound(runs));
            }
            AnsiConsole.Write(FederatedRunner.Summary(runs, headline));
            AnsiConsole.Write(FederatedRunner.Categories(runs));
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"results: {Path.Combine(job.Output, "rounds.csv")}, {Path.Combine(job.Output, "results.json")}; plots: {plots}");
            return 0;
        }));
        return command;
    }
}
