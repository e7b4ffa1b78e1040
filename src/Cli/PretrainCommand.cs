using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Tokenization;
using FedLora.Model.Training;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary><c>fedlora pretrain</c>: full-parameter training of a base GPT on a text corpus.</summary>
internal static class PretrainCommand
{
    public static Command Create()
    {
        var corpus = new Option<string>("--corpus")
        {
            Description = "A UTF-8 text file to train on; default: the shipped Tiny Shakespeare",
            DefaultValueFactory = _ => Path.Combine(Paths.DefaultDataDirectory, "tinyshakespeare", "input.txt"),
        };
        var layers = CommonOptions.Positive("--layers", "Transformer blocks L", 4);
        var channels = CommonOptions.Positive("--channels", "Width C of the residual stream", 128);
        var heads = CommonOptions.Positive("--heads", "Attention heads (must divide --channels)", 4);
        var context = CommonOptions.Positive("--context", "Sequence length T, and the model's context length", 256);
        var batch = CommonOptions.Positive("--batch", "Sequences per step B", 8);
        var steps = CommonOptions.Positive("--steps", "Optimizer steps", 2000);
        var rate = CommonOptions.Positive("--lr", "Peak learning rate (warmup, then cosine decay to 10%)", 1e-3f);
        var warmup = new Option<int>("--warmup") { Description = "Linear warmup steps", DefaultValueFactory = _ => 100 };
        var decay = new Option<float>("--weight-decay") { Description = "AdamW weight decay", DefaultValueFactory = _ => 0.01f };
        var evalEvery = CommonOptions.Positive("--eval-every", "Steps between held-out evaluations", 250);
        var evalBatches = CommonOptions.Positive("--eval-batches", "Held-out batches per evaluation (the last 10% of the corpus)", 16);
        var output = new Option<string>("--out")
        {
            Description = "Where to write the checkpoint; default: runs/pretrain-TIME/model.safetensors",
        };
        var device = CommonOptions.Device();
        var seed = CommonOptions.Seed();
        var command = new Command("pretrain", "Train a base GPT from scratch on a text corpus (full-parameter AdamW), with held-out loss as it goes")
        {
            corpus, layers, channels, heads, context, batch, steps, rate, warmup, decay, evalEvery, evalBatches, output, device, seed,
        };
        command.SetAction(parse => Verb.Run(() =>
        {
            var config = new GptConfig(ByteTokenizer.VocabSize, parse.GetValue(context), parse.GetValue(layers), parse.GetValue(channels), parse.GetValue(heads));
            try
            {
                config.Validate();
            }
            catch (ArgumentOutOfRangeException e)
            {
                throw new UsageException(e.Message);
            }
            var options = new TrainingOptions(parse.GetValue(steps), parse.GetValue(rate), parse.GetValue(warmup), 0.1f, parse.GetValue(decay), 1f);
            options.Validate();
            var corpusPath = Paths.RequireFile(parse.GetValue(corpus)!, "corpus", "Pass --corpus PATH to a text file.");
            var outPath = parse.GetValue(output) ?? Path.Combine(Paths.DefaultOutput("pretrain"), "model.safetensors");
            var (b, t, every, evalCount, runSeed) = (parse.GetValue(batch), config.ContextLength, parse.GetValue(evalEvery), parse.GetValue(evalBatches), parse.GetValue(seed));

            var tokens = ByteTokenizer.Instance.Encode(File.ReadAllText(corpusPath));
            var (train, heldOut) = DataSplit.Tail(tokens, 0.1);
            if (train.Length <= b * (t + 1) || heldOut.Length <= t + 1)
            {
                throw new UsageException($"the corpus has {tokens.Length} tokens: too few for batches of {b} x {t} and a 10% held-out split");
            }
            var source = new TextBatcher(train, b, t, runSeed);
            var heldOutBatches = TextBatcher.InOrder(heldOut, b, t).Take(evalCount).ToList();

            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!);
            using var model = new Gpt(backend, config, b, t) { TrainBase = true };
            model.InitializeParameters(new Random(runSeed));
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture,
                $"pretrain: L={config.Layers} C={config.Channels} heads={config.Heads} T={t}, {config.ParameterCount:N0} parameters, {train.Length:N0} training tokens, on {backend.Description}");
            var baseline = Math.Log(ByteTokenizer.VocabSize);
            var evaluations = new List<(int Step, double Loss)>();
            var watch = Stopwatch.StartNew();
            var lastLoss = float.NaN;
            AnsiConsole.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(progress =>
                {
                    var task = progress.AddTask("training", maxValue: options.Steps);
                    LocalTrainer.Train(model, model.Parameters, model.ParameterGradients, source, options, onStep: step =>
                    {
                        lastLoss = step.Loss;
                        task.Increment(1);
                        task.Description = string.Create(CultureInfo.InvariantCulture, $"step {step.Step + 1} loss {step.Loss:0.000}");
                        if ((step.Step + 1) % every == 0 || step.Step + 1 == options.Steps)
                        {
                            var (loss, _) = LocalTrainer.Evaluate(model, heldOutBatches);
                            evaluations.Add((step.Step + 1, loss));
                            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"step {step.Step + 1}: train {step.Loss:0.000}, held-out {loss:0.000} (uniform bytes: {baseline:0.000})");
                        }
                    });
                });
            watch.Stop();
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
            GptCheckpoint.Save(model, outPath, new Dictionary<string, string>
            {
                ["command"] = $"fedlora pretrain --corpus {Path.GetFileName(corpusPath)} --layers {config.Layers} --channels {config.Channels} --heads {config.Heads} --context {t} --batch {b} --steps {options.Steps} --lr {options.LearningRate.ToString(CultureInfo.InvariantCulture)} --seed {runSeed}",
                ["held_out_loss"] = evaluations[^1].Loss.ToString("R", CultureInfo.InvariantCulture),
            });
            var table = new Table().AddColumns("steps", "train loss", "held-out loss", "uniform-byte loss", "tokens/s", "checkpoint");
            table.AddRow(options.Steps.ToString(CultureInfo.InvariantCulture), CommonOptions.Number(lastLoss), CommonOptions.Number(evaluations[^1].Loss),
                CommonOptions.Number(baseline), CommonOptions.Number((double)options.Steps * b * t / watch.Elapsed.TotalSeconds, "0"),
                $"{outPath} ({CommonOptions.Megabytes(new FileInfo(outPath).Length)} MB)");
            AnsiConsole.Write(table);
            return 0;
        }));
        return command;
    }
}
