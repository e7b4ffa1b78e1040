using System.CommandLine;
using System.Globalization;
using FedLora.Lora;
using FedLora.Model.Data;
using FedLora.Model.Training;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora finetune</c>: centralized LoRA fine-tuning on every client's data pooled, the baseline federated runs are compared with.</summary>
internal static class FinetuneCommand
{
    public static Command Create()
    {
        var rank = CommonOptions.Positive("--rank", "LoRA rank r", 16);
        var alpha = new Option<float?>("--alpha") { Description = "LoRA alpha (default 2r)" };
        var targets = new Option<string>("--targets") { Description = "Layers with adapters: all, or a list of qkv, attn-proj, mlp-up, mlp-down", DefaultValueFactory = _ => "all" };
        var steps = CommonOptions.Positive("--steps", "AdamW steps", 400);
        var batch = CommonOptions.Positive("--batch", "Examples per step", 8);
        var context = CommonOptions.Positive("--context", "Tokens per example window", 128);
        var rate = CommonOptions.Positive("--lr", "Learning rate (cosine decay to 10% after 5% warmup)", 2e-3f);
        var output = new Option<string?>("--out") { Description = "The folder to write the adapter to (a peft adapter folder); default: runs/finetune-TIME/adapter" };
        var model = CommonOptions.BaseModel();
        var data = CommonOptions.Data();
        var test = CommonOptions.Test();
        var testFraction = CommonOptions.TestFraction();
        var labels = CommonOptions.Labels();
        var evalEvery = CommonOptions.EvalEvery("steps");
        var evalTokens = CommonOptions.EvalTokens();
        var device = CommonOptions.Device();
        var seed = CommonOptions.Seed();
        var command = new Command("finetune", "Centralized LoRA fine-tuning on all clients' data pooled (Dolly by default): the baseline for federated runs")
        {
            rank, alpha, targets, steps, batch, context, rate, output, model, data, test, testFraction, labels, evalEvery, evalTokens, device, seed,
        };
        command.SetAction(parse => Verb.Run(() =>
        {
            var (r, b, t, runSeed) = (parse.GetValue(rank), parse.GetValue(batch), parse.GetValue(context), parse.GetValue(seed));
            var options = new TrainingOptions(parse.GetValue(steps), parse.GetValue(rate), WarmupSteps: parse.GetValue(steps) / 20, MinimumLearningRateFraction: 0.1f);
            var layers = CommonOptions.ParseTargets(parse.GetValue(targets)!);
            var outPath = parse.GetValue(output) ?? Path.Combine(Paths.DefaultOutput("finetune"), "adapter");
            if (File.Exists(outPath)) throw new UsageException($"--out {outPath} is a file; the adapter is written as a folder (adapter_config.json, adapter_model.safetensors)");
            var dataPath = parse.GetValue(data)!;
            var tokenizer = CommonOptions.LoadTokenizer(parse.GetValue(model)!);
            // Everything is pooled: one pooled file needs no split, so it is read as one IID client.
            var dolly = InstructionData.Load(new DataRequest(dataPath, parse.GetValue(test), parse.GetValue(testFraction), parse.GetValue(labels),
                File.Exists(dataPath) ? "iid" : "natural", 1, t, runSeed), tokenizer);
            var schedule = new TaskEvaluationSchedule(parse.GetValue(evalEvery), parse.GetValue(evalTokens));
            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!);
            using var gpt = CommonOptions.LoadModel(parse.GetValue(model)!, backend, b, t);
            var modules = gpt.Layout.LoraModules(layers);
            var width = modules.Min(m => Math.Min(m.InFeatures, m.OutFeatures));
            if (r > width) throw new UsageException($"--rank {r} exceeds the narrowest adapted layer's width {width}");
            using var adapters = new AdapterSet(backend, modules, r, parse.GetValue(alpha) ?? 2f * r, LoraScaling.Standard);
            adapters.Initialize(new Random(runSeed));
            gpt.Attach(adapters);
            var evaluation = dolly.EvaluationSets(b, t);
            var before = evaluation.ToDictionary(s => s.Name, s => LocalTrainer.Evaluate(gpt, s.Batches).Loss);
            var pooled = dolly.Pooled();
            var tasks = new List<TaskRound>();
            if (schedule.IsDue(0, options.Steps)) tasks.Add(TaskMetrics.Measure(0, gpt, tokenizer, dolly, b, t, schedule));
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"finetune: rank {r} on {modules.Count} layers, {pooled.Count:N0} examples, {options.Steps} steps of {b} x {t}, on {backend.Description}");
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"data: {dolly.Description}");
            AnsiConsole.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(progress =>
                {
                    var task = progress.AddTask("finetune", maxValue: options.Steps);
                    LocalTrainer.Train(gpt, adapters.Parameters, adapters.Gradients, new InstructionBatcher(pooled, b, t, runSeed, dolly.EndOfText), options, onStep: step =>
                    {
                        task.Increment(1);
                        task.Description = string.Create(CultureInfo.InvariantCulture, $"step {step.Step + 1} loss {step.Loss:0.000}");
                        if (schedule.IsDue(step.Step + 1, options.Steps)) tasks.Add(TaskMetrics.Measure(step.Step + 1, gpt, tokenizer, dolly, b, t, schedule));
                    });
                });
            var table = new Table().AddColumns("held-out set", "before", "after");
            foreach (var set in evaluation)
            {
                table.AddRow(Markup.Escape(set.Name), CommonOptions.Number(before[set.Name]), CommonOptions.Number(LocalTrainer.Evaluate(gpt, set.Batches).Loss));
            }
            PeftAdapter.Save(adapters, outPath, parse.GetValue(model)!);
            AnsiConsole.Write(table);
            if (tasks.Count > 0)
            {
                var metrics = tasks.SelectMany(x => x.Results).Select(x => x.Metric).Distinct().ToArray();
                var progress = new Table().AddColumn("step");
                foreach (var metric in metrics) progress.AddColumn(metric);
                foreach (var measured in tasks)
                {
                    progress.AddRow([measured.Round.ToString(CultureInfo.InvariantCulture), .. metrics.Select(m => CommonOptions.Number(measured.Value(m), "0.000"))]);
                }
                AnsiConsole.Write(progress);
                AnsiConsole.Write(TaskMetrics.Table(tasks[^1].Results));
            }
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"adapter: {outPath}");
            return 0;
        }));
        return command;
    }
}
