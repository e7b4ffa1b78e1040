using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using FedLora.Federation;
using FedLora.Kernels;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.Evaluation;
using FedLora.Runtime;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary>One method's finished run.</summary>
internal sealed record MethodRun(
    string Method, string Budgets, IReadOnlyDictionary<string, double> Initial, IReadOnlyList<RoundResult> Rounds, long DownloadBytes,
    long UploadBytes, double Seconds, IReadOnlyList<TaskRound> Tasks)
{
    public double FinalLoss => Rounds[^1].Evaluation["all"];

    /// <summary>Under DP, what the last round reported (epsilon spent by the whole run); null for a run without DP.</summary>
    public RoundPrivacy? Privacy => Rounds[^1].Privacy;
    public double BestLoss => Rounds.Min(r => r.Evaluation["all"]);

    /// <summary>The task metrics after <paramref name="round"/> rounds (0: the start), or null when they were not measured then.</summary>
    public TaskRound? TaskAt(int round) => Tasks.FirstOrDefault(t => t.Round == round);
}

/// <summary>Runs federated jobs with live progress and writes their results.</summary>
internal static class FederatedRunner
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>
    /// Builds a method's strategy, clients and model and checks them (a rank above a layer's width, a
    /// bad budget, DP for a method without a private aggregation) without training; the model is disposed by
    /// the caller. <paramref name="privately"/>: with the job's DP settings.
    /// </summary>
    public static (FederatedSimulation Simulation, Gpt Model, string Budgets) Prepare(string method, FederatedJob job, InstructionData data, Backend backend,
        bool privately = false)
    {
        var model = CommonOptions.LoadModel(job.ModelPath, backend, job.Batch, job.Context);
        try
        {
            var modules = model.Layout.LoraModules(job.Targets);
            var (settings, budgets) = job.BudgetsFor(method);
            var strategy = StrategyCatalog.Create(method, modules, settings);
            var clients = data.Clients.Select((examples, id) => new FederatedClient(id, examples.Count, budgets[id],
                seed => new Model.Data.InstructionBatcher(examples, job.Batch, job.Context, seed, data.EndOfText))).ToList();
            var privacy = privately && job.Dp is { } dp ? dp.Resolve(clients.Count, job.ClientsPerRound, job.Rounds) : null;
            var options = new SimulationOptions(job.Rounds, job.ClientsPerRound, job.Local, job.Seed) { Privacy = privacy };
            var simulation = new FederatedSimulation(strategy, model, clients, data.EvaluationSets(job.Batch, job.Context), options);
            var described = privacy is null ? "" : string.Create(CultureInfo.InvariantCulture,
                $"; DP: clip {privacy.Settings.Clip:G4}{(privacy.Settings.Adaptive is null ? "" : " (adaptive)")}, noise z {privacy.NoiseMultiplier:G4} "
                + $"(std {privacy.MeanNoiseStandardDeviation(privacy.Settings.Clip):G3} on each value of the round's average), delta {privacy.Delta:G3}, q {privacy.SamplingRate:G3}");
            return (simulation, model, $"global rank {settings.Rank}, clients {string.Join(",", budgets)}{described}");
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            model.Dispose();
            throw new UsageException($"{method}: {e.Message}");
        }
    }

    /// <summary>
    /// Runs a prepared simulation, showing round, client, loss and bytes as it goes, and measures the
    /// task metrics of the global model when the job's schedule says so (they read the model, never
    /// change it or any random draw, so the run's numbers are the same with or without them).
    /// </summary>
    public static MethodRun Run(string method, FederatedSimulation simulation, FederatedJob job, string budgets, Gpt model, InstructionData data)
    {
        var watch = Stopwatch.StartNew();
        IReadOnlyList<RoundResult> rounds = [];
        var tasks = new List<TaskRound>();
        var schedule = job.Evaluation;
        var headline = TaskMetrics.Headline(data);
        var tokenizer = CommonOptions.LoadTokenizer(job.ModelPath);
        if (schedule.IsDue(0, job.Rounds)) tasks.Add(TaskMetrics.Measure(0, model, tokenizer, data, job.Batch, job.Context, schedule));
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
                    onRound: result =>
                    {
                        var metric = "";
                        if (schedule.IsDue(result.Round + 1, job.Rounds))
                        {
                            using var adapters = GlobalModel.Adapters(model, simulation.State!);
                            model.Attach(adapters);
                            try
                            {
                                var measured = TaskMetrics.Measure(result.Round + 1, model, tokenizer, data, job.Batch, job.Context, schedule);
                                tasks.Add(measured);
                                metric = string.Create(CultureInfo.InvariantCulture, $", {headline} {CommonOptions.Number(measured.Value(headline), "0.000")}");
                            }
                            finally
                            {
                                model.Attach(null);
                            }
                        }
                        var privacy = result.Privacy is { } p
                            ? string.Create(CultureInfo.InvariantCulture, $", epsilon {DpOptions.Format(p.Epsilon)} (clip {p.Clip:G3}, {p.Clipped}/{p.Reported} clipped)")
                            : "";
                        AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                            $"  round {result.Round + 1}: held-out {result.Evaluation["all"]:0.0000}{metric}, clients' train loss {result.Clients.Average(c => c.MeanLoss):0.000}, down {CommonOptions.Megabytes(result.DownloadBytes)} MB, up {CommonOptions.Megabytes(result.UploadBytes)} MB, {result.Seconds:0.0} s{privacy}");
                    });
            });
        watch.Stop();
        return new MethodRun(method, budgets, simulation.InitialEvaluation!, rounds, simulation.Ledger.TotalDownload(), simulation.Ledger.TotalUpload(),
            watch.Elapsed.TotalSeconds, tasks);
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

    /// <summary>
    /// The summary table: start, final and best held-out loss, the headline task metric at the start and
    /// the end (with its 95% interval) when measured, MB down and up, wall time per method.
    /// </summary>
    public static Table Summary(IReadOnlyList<MethodRun> runs, string headline)
    {
        var measured = runs.Any(r => r.Tasks.Count > 0);
        var privately = runs.Any(r => r.Privacy is not null);
        var table = new Table().AddColumns("method", "start loss", "final loss", "best loss");
        if (measured) table.AddColumns($"start {headline}", $"final {headline} [[95%]]");
        if (privately) table.AddColumns("epsilon");
        table.AddColumns("MB down", "MB up", "wall time (s)");
        foreach (var run in runs)
        {
            var cells = new List<string> { run.Method, CommonOptions.Number(run.Initial["all"]), CommonOptions.Number(run.FinalLoss), CommonOptions.Number(run.BestLoss) };
            if (measured)
            {
                var start = run.TaskAt(0)?.Results.FirstOrDefault(r => r.Metric == headline && r.Category == TaskMetric.All);
                var final = run.TaskAt(run.Rounds.Count)?.Results.FirstOrDefault(r => r.Metric == headline && r.Category == TaskMetric.All);
                cells.Add(start is null ? "-" : CommonOptions.Number(start.Value, "0.000"));
                cells.Add(final is null ? "-" : TaskMetrics.WithInterval(final));
            }
            if (privately) cells.Add(run.Privacy is { } privacy ? $"{DpOptions.Format(privacy.Epsilon)} (delta {privacy.Delta.ToString("G3", CultureInfo.InvariantCulture)})" : "no DP");
            cells.AddRange([CommonOptions.Megabytes(run.DownloadBytes), CommonOptions.Megabytes(run.UploadBytes), CommonOptions.Number(run.Seconds, "0.0")]);
            table.AddRow([.. cells.Select(Markup.Escape)]);
        }
        return table;
    }

    /// <summary>Held-out loss and the task metrics per round (the rounds they were measured at) and method.</summary>
    public static Table PerRound(IReadOnlyList<MethodRun> runs)
    {
        var metrics = runs.SelectMany(r => r.Tasks).SelectMany(t => t.Results).Select(r => r.Metric).Distinct().ToArray();
        var table = new Table().AddColumns("method", "round", "held-out loss");
        foreach (var metric in metrics) table.AddColumn(metric);
        foreach (var run in runs)
        {
            foreach (var task in run.Tasks)
            {
                var loss = task.Round == 0 ? run.Initial["all"] : run.Rounds[task.Round - 1].Evaluation["all"];
                table.AddRow([run.Method, task.Round.ToString(CultureInfo.InvariantCulture), CommonOptions.Number(loss),
                    .. metrics.Select(m => CommonOptions.Number(task.Value(m), "0.000"))]);
            }
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
            table.AddRow([Markup.Escape(name), CommonOptions.Number(runs[0].Initial[name]), .. runs.Select(r => CommonOptions.Number(r.Rounds[^1].Evaluation[name]))]);
        }
        return table;
    }

    /// <summary>Writes rounds.csv (one line per method and round) and results.json (the job, the runs, the ledger totals).</summary>
    public static void WriteResults(string folder, FederatedJob job, IReadOnlyList<MethodRun> runs)
    {
        Directory.CreateDirectory(folder);
        var evaluationNames = runs[0].Rounds[0].Evaluation.Keys.ToArray();
        var metrics = runs.SelectMany(r => r.Tasks).SelectMany(t => t.Results).Select(r => r.Metric).Distinct().ToArray();
        string Metrics(MethodRun run, int round) => string.Concat(metrics.Select(m => "," + (run.TaskAt(round) is { } task ? Invariant(task.Value(m)) : "")));
        var csv = new StringBuilder();
        csv.AppendLine("method,round," + string.Join(",", evaluationNames.Select(n => Csv("loss_" + n))) + ",client_train_loss,download_bytes,upload_bytes,seconds"
            + string.Concat(metrics.Select(m => "," + m)));
        foreach (var run in runs)
        {
            csv.AppendLine(CultureInfo.InvariantCulture, $"{run.Method},0,{string.Join(",", evaluationNames.Select(n => Invariant(run.Initial[n])))},,0,0,0{Metrics(run, 0)}");
            foreach (var round in run.Rounds)
            {
                csv.AppendLine(CultureInfo.InvariantCulture,
                    $"{run.Method},{round.Round + 1},{string.Join(",", evaluationNames.Select(n => Invariant(round.Evaluation[n])))},{Invariant(round.Clients.Average(c => c.MeanLoss))},{round.DownloadBytes},{round.UploadBytes},{Invariant(round.Seconds)}{Metrics(run, round.Round + 1)}");
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
                data = job.Data.Data,
                test = job.Data.Test,
                evalEvery = job.Evaluation.Every,
                dp = job.Dp is { } dp ? new
                {
                    clip = dp.Clip,
                    noiseMultiplier = dp.NoiseMultiplier,
                    targetEpsilon = dp.TargetEpsilon,
                    delta = dp.Delta,
                    adaptive = dp.Adaptive is { } adaptive ? new { adaptive.TargetQuantile, adaptive.LearningRate, adaptive.CountNoise } : null,
                } : null,
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
                privacy = run.Privacy is { } privacy ? new
                {
                    epsilon = Finite(privacy.Epsilon),
                    privacy.Delta,
                    privacy.NoiseMultiplier,
                    finalClip = privacy.NextClip,
                } : null,
                taskMetrics = run.Tasks.Select(t => new { t.Round, results = t.Results.Select(JsonMetric) }),
                rounds = run.Rounds.Select(round => new
                {
                    round = round.Round + 1,
                    evaluation = round.Evaluation,
                    round.DownloadBytes,
                    round.UploadBytes,
                    round.Seconds,
                    privacy = round.Privacy is { } privacy ? new { epsilon = Finite(privacy.Epsilon), privacy.Clip, privacy.Clipped, privacy.Reported } : null,
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

    /// <summary>A number JSON can hold: an unbounded epsilon (z = 0) becomes null.</summary>
    private static double? Finite(double value) => double.IsFinite(value) ? value : null;

    /// <summary>A CSV cell: quoted when it holds a comma, a quote or a line break.</summary>
    private static string Csv(string text) =>
        text.AsSpan().IndexOfAny(",\"\n\r") < 0 ? text : "\"" + text.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>A metric for JSON: NaN bounds (undefined intervals) become null, which JSON can hold.</summary>
    public static object JsonMetric(MetricResult r) => new
    {
        r.Category,
        r.Metric,
        r.Count,
        r.Value,
        low = double.IsNaN(r.Low) ? (double?)null : r.Low,
        high = double.IsNaN(r.High) ? (double?)null : r.High,
    };
}
