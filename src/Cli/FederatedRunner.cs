using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using FedLora.Federation;
using FedLora.Kernels;
using FedLora.Lora;
using FedLora.Model;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary>One method's finished run.</summary>
internal sealed record MethodRun(
    string Method, string Budgets, IReadOnlyDictionary<string, double> Initial, IReadOnlyList<RoundResult> Rounds, long DownloadBytes,
    long UploadBytes, double Seconds)
{
    public double FinalLoss => Rounds[^1].Evaluation["all"];
    public double BestLoss => Rounds.Min(r => r.Evaluation["all"]);
}

/// <summary>Runs federated jobs with live progress and writes their results.</summary>
internal static class FederatedRunner
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>
    /// Builds a method's strategy, clients and model and checks them (a rank above a layer's width, a
    /// bad budget) without training; the model is disposed by the caller.
    /// </summary>
    public static (FederatedSimulation Simulation, Gpt Model, string Budgets) Prepare(string method, FederatedJob job, InstructionData data, Backend backend)
    {
        var model = CommonOptions.LoadModel(job.ModelPath, backend, job.Batch, job.Context);
        try
        {
            var modules = model.Layout.LoraModules(job.Targets);
            var (settings, budgets) = job.BudgetsFor(method, data.Clients.Count);
            var strategy = StrategyCatalog.Create(method, modules, settings);
            var clients = data.Clients.Select((examples, id) => new FederatedClient(id, examples.Count, budgets[id],
                seed => new Model.Data.InstructionBatcher(examples, job.Batch, job.Context, seed, data.EndOfText))).ToList();
            var options = new SimulationOptions(job.Rounds, job.ClientsPerRound, job.Local, job.Seed);
            var simulation = new FederatedSimulation(strategy, model, clients, data.EvaluationSets(job.Batch, job.Context), options);
            return (simulation, model, $"global rank {settings.Rank}, clients {string.Join(",", budgets)}");
        }
        catch (ArgumentException e)
        {
            model.Dispose();
            throw new UsageException($"{method}: {e.Message}");
        }
    }

    /// <summary>Runs a prepared simulation, showing round, client, loss and bytes as it goes.</summary>
    public static MethodRun Run(string method, FederatedSimulation simulation, FederatedJob job, string budgets)
    {
        var watch = Stopwatch.StartNew();
        IReadOnlyList<RoundResult> rounds = [];
        var totalSteps = job.Rounds * job.ClientsPerRound * job.Local.Steps;
        AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"[bold]{method}[/]: {budgets}");
        AnsiConsole.Progress().AutoClear(false).HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(progress =>
            {
                var task = progress.AddTask(method, maxValue: totalSteps);
                rounds = simulation.Run(
                    onClientStep: (round, client, step) =>
                    {
                        task.Increment(1);
                        task.Description = string.Create(CultureInfo.InvariantCulture,
                            $"{method} round {round + 1}/{job.Rounds} client {client} step {step.Step + 1} loss {step.Loss:0.000}");
                    },
                    onRound: result => AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                        $"  round {result.Round + 1}: held-out {result.Evaluation["all"]:0.0000}, clients' train loss {result.Clients.Average(c => c.MeanLoss):0.000}, down {CommonOptions.Megabytes(result.DownloadBytes)} MB, up {CommonOptions.Megabytes(result.UploadBytes)} MB, {result.Seconds:0.0} s"));
            });
        watch.Stop();
        return new MethodRun(method, budgets, simulation.InitialEvaluation!, rounds, simulation.Ledger.TotalDownload(), simulation.Ledger.TotalUpload(),
            watch.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// Saves the global model of a finished run: its adapters as a peft folder (folder/adapter), or for
    /// FLoRA the merged base weights.
    /// </summary>
    public static string SaveGlobal(FederatedSimulation simulation, Gpt model, string folder, string baseModel)
    {
        var state = simulation.State!;
        if (state.Rank == 0)
        {
            var path = Path.Combine(folder, "model.safetensors");
            GptCheckpoint.Save(model, path);
            return path;
        }
        using var adapters = new AdapterSet(model.Backend, state.Modules, state.Rank, state.Alpha, state.Scaling);
        for (var m = 0; m < state.Adapters.Count; m++)
        {
            model.Backend.Upload(state.Adapters[m].A, adapters.Adapters[m].A);
            model.Backend.Upload(state.Adapters[m].B, adapters.Adapters[m].B);
        }
        var adapterPath = Path.Combine(folder, "adapter");
        PeftAdapter.Save(adapters, adapterPath, baseModel);
        return adapterPath;
    }

    /// <summary>The summary table: final and best held-out loss, MB down and up, wall time per method.</summary>
    public static Table Summary(IReadOnlyList<MethodRun> runs)
    {
        var table = new Table().AddColumns("method", "start loss", "final loss", "best loss", "MB down", "MB up", "wall time (s)");
        foreach (var run in runs)
        {
            table.AddRow(run.Method, CommonOptions.Number(run.Initial["all"]), CommonOptions.Number(run.FinalLoss), CommonOptions.Number(run.BestLoss),
                CommonOptions.Megabytes(run.DownloadBytes), CommonOptions.Megabytes(run.UploadBytes), CommonOptions.Number(run.Seconds, "0.0"));
        }
        return table;
    }

    /// <summary>Final held-out loss per Dolly category and method.</summary>
    public static Table Categories(IReadOnlyList<MethodRun> runs)
    {
        var names = runs[0].Rounds[^1].Evaluation.Keys.Where(k => k != "all").ToArray();
        var table = new Table().AddColumn("category").AddColumn("start");
        foreach (var run in runs) table.AddColumn(run.Method);
        foreach (var name in names)
        {
            table.AddRow([name, CommonOptions.Number(runs[0].Initial[name]), .. runs.Select(r => CommonOptions.Number(r.Rounds[^1].Evaluation[name]))]);
        }
        return table;
    }

    /// <summary>Writes rounds.csv (one line per method and round) and results.json (the job, the runs, the ledger totals).</summary>
    public static void WriteResults(string folder, FederatedJob job, IReadOnlyList<MethodRun> runs)
    {
        Directory.CreateDirectory(folder);
        var evaluationNames = runs[0].Rounds[0].Evaluation.Keys.ToArray();
        var csv = new StringBuilder();
        csv.AppendLine("method,round," + string.Join(",", evaluationNames.Select(n => "loss_" + n)) + ",client_train_loss,download_bytes,upload_bytes,seconds");
        foreach (var run in runs)
        {
            csv.AppendLine(CultureInfo.InvariantCulture, $"{run.Method},0,{string.Join(",", evaluationNames.Select(n => Invariant(run.Initial[n])))},,0,0,0");
            foreach (var round in run.Rounds)
            {
                csv.AppendLine(CultureInfo.InvariantCulture,
                    $"{run.Method},{round.Round + 1},{string.Join(",", evaluationNames.Select(n => Invariant(round.Evaluation[n])))},{Invariant(round.Clients.Average(c => c.MeanLoss))},{round.DownloadBytes},{round.UploadBytes},{Invariant(round.Seconds)}");
            }
        }
        WriteAtomically(Path.Combine(folder, "rounds.csv"), csv.ToString());
        var json = JsonSerializer.Serialize(new
        {
            job = new
            {
                job.Ranks,
                job.Ratios,
                job.GlobalRank,
                job.Alpha,
                targets = job.Targets.ToString(),
                job.Rounds,
                job.ClientsPerRound,
                localSteps = job.Local.Steps,
                learningRate = job.Local.LearningRate,
                job.Batch,
                job.Context,
                job.Partition,
                job.ClientCount,
                model = Path.GetFileName(job.ModelPath),
                job.Device,
                job.Seed,
            },
            runs = runs.Select(run => new
            {
                run.Method,
                run.Budgets,
                initial = run.Initial,
                run.FinalLoss,
                run.BestLoss,
                run.DownloadBytes,
                run.UploadBytes,
                run.Seconds,
                rounds = run.Rounds.Select(round => new
                {
                    round = round.Round + 1,
                    evaluation = round.Evaluation,
                    round.DownloadBytes,
                    round.UploadBytes,
                    round.Seconds,
                    clients = round.Clients.Select(c => new { c.ClientId, c.Rank, c.MeanLoss, c.DownloadBytes, c.UploadBytes }),
                }),
            }),
        }, Json);
        WriteAtomically(Path.Combine(folder, "results.json"), json);
    }

    /// <summary>Writes a file through a temporary one in the same folder, so a crash never leaves half a file.</summary>
    public static void WriteAtomically(string path, string text)
    {
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, text);
        File.Move(temporary, path, overwrite: true);
    }

    private static string Invariant(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
