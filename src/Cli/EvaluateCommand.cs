using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using FedLora.Model.Data;
using FedLora.Model.Evaluation;
using FedLora.Model.Tokenization;
using FedLora.Model.Training;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora evaluate</c>: held-out loss and task metrics of a model, optionally with an adapter.</summary>
internal static class EvaluateCommand
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public static Command Create()
    {
        var model = CommonOptions.BaseModel();
        var adapter = new Option<string?>("--adapter") { Description = "A LoRA adapter to apply: a peft adapter folder (from finetune, simulate, serve or peft) or a FedLora adapter file" };
        var data = CommonOptions.Data();
        data.Description = "What to score: a task file (all of it is the test set), or a folder whose test set is --test, global_test.json or --test-fraction of every file; default: the shipped Dolly test set";
        var test = CommonOptions.Test();
        var testFraction = CommonOptions.TestFraction();
        var labels = CommonOptions.Labels();
        var text = new Option<string?>("--text") { Description = "A plain-text file instead: its mean next-token loss and perplexity over consecutive windows of --context tokens" };
        var batch = CommonOptions.Positive("--batch", "Rows per forward pass", 8);
        var context = CommonOptions.Positive("--context", "Tokens per row (<= the model's context)", 128);
        var maxTokens = CommonOptions.EvalTokens();
        var freeForm = new Option<bool>("--no-free-form") { Description = "Skip the greedy answers (exact match, ROUGE-L) of free-form records: loss and accuracy only" };
        var device = CommonOptions.Device();
        var seed = CommonOptions.Seed();
        var command = new Command("evaluate",
            "Score a model (and adapter) on a test set: held-out loss; accuracy of closed-choice and classification records by log-likelihood (raw and per character); exact match and ROUGE-L of greedy answers to free-form records; per category with 95% intervals, as a table and a JSON line")
        {
            model, adapter, data, test, testFraction, labels, text, batch, context, maxTokens, freeForm, device, seed,
        };
        command.SetAction(parse => Verb.Run(() =>
        {
            var (b, t) = (parse.GetValue(batch), parse.GetValue(context));
            var modelPath = parse.GetValue(model)!;
            var tokenizer = CommonOptions.LoadTokenizer(modelPath);
            InstructionData? records = null;
            string? textPath = parse.GetValue(text);
            if (textPath is not null) Paths.RequireFile(textPath, "text file", "Pass --text with a UTF-8 text file.");
            else records = LoadTest(parse.GetValue(data)!, parse.GetValue(test), parse.GetValue(testFraction), parse.GetValue(labels), parse.GetValue(seed), tokenizer);
            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!);
            using var gpt = CommonOptions.LoadModel(modelPath, backend, b, t);
            using var adapters = parse.GetValue(adapter) is { } adapterPath
                ? CommonOptions.LoadAdapter(adapterPath, backend)
                : null;
            gpt.Attach(adapters);

            if (textPath is not null)
            {
                var tokens = tokenizer.Encode(File.ReadAllText(textPath));
                if (tokens.Length < t + 1) throw new UsageException($"{textPath} has {tokens.Length} tokens, fewer than one window of --context + 1 = {t + 1}");
                var (loss, count) = LocalTrainer.Evaluate(gpt, TextBatcher.InOrder(tokens, b, t));
                var table = new Table().AddColumns("text", "tokens scored", "loss", "perplexity");
                table.AddRow(Markup.Escape(textPath), count.ToString("N0", CultureInfo.InvariantCulture), CommonOptions.Number(loss), CommonOptions.Number(Math.Exp(loss), "0.00"));
                AnsiConsole.Write(table);
                Console.WriteLine(JsonSerializer.Serialize(new { text = textPath, tokens = count, loss, perplexity = Math.Exp(loss) }, Json));
                return 0;
            }

            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"evaluate: {records!.Description}, on {backend.Description}");
            var losses = records.EvaluationSets(b, t).Select(set => (set.Name, Loss: LocalTrainer.Evaluate(gpt, set.Batches).Loss)).ToArray();
            var results = TaskEvaluation.Evaluate(gpt, tokenizer, records.Test,
                new TaskEvaluationOptions(b, t, parse.GetValue(maxTokens), FreeForm: !parse.GetValue(freeForm)));
            var lossTable = new Table().AddColumns("category", "held-out loss");
            foreach (var (name, loss) in losses) lossTable.AddRow(Markup.Escape(name), CommonOptions.Number(loss));
            AnsiConsole.Write(lossTable);
            if (results.Count > 0) AnsiConsole.Write(TaskMetrics.Table(results));
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                model = modelPath,
                adapter = parse.GetValue(adapter),
                records = records.Test.Count,
                loss = losses.ToDictionary(l => l.Name, l => double.IsNaN(l.Loss) ? (double?)null : l.Loss),
                metrics = results.Select(FederatedRunner.JsonMetric),
            }, Json));
            return 0;
        }));
        return command;
    }

    /// <summary>The test records: --test, else all of a task file, else a folder's test set.</summary>
    private static InstructionData LoadTest(string data, string? test, double fraction, string? labels, int seed, ITokenizer tokenizer)
    {
        var labelSet = labels?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (labelSet is { Length: < 2 }) throw new UsageException($"--labels '{labels}' must declare at least two labels, comma-separated");
        var options = new TaskFileOptions(labelSet);
        if (test is not null) return InstructionData.TestOnly(TaskFiles.Load(Paths.RequireFile(test, "test file", "Pass --test with a task file."), options), test, tokenizer);
        var path = InstructionData.ResolveData(data);
        if (File.Exists(path)) return InstructionData.TestOnly(TaskFiles.Load(path, options), path, tokenizer);
        if (!(fraction > 0 && fraction < 1)) throw new UsageException($"--test-fraction {fraction} must be in (0, 1)");
        var folder = TaskFiles.LoadFolder(path, null, fraction, seed, options);
        return InstructionData.TestOnly(folder.Test, folder.TestSource, tokenizer);
    }
}
