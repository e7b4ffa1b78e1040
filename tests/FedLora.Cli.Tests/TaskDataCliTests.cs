using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FedLora.Kernels.Cpu;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Cli.Tests;

/// <summary>Task metrics and user data through the fedlora command: evaluate, custom folders and files, partitions, output.</summary>
public sealed class TaskDataCliTests : IDisposable
{
    private const string Tiny = "--rounds,1,--clients-per-round,2,--local-steps,1,--batch,2,--context,32";
    private readonly string _scratch = Directory.CreateTempSubdirectory("fedlora-task-").FullName;

    public void Dispose() => Directory.Delete(_scratch, recursive: true);

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "FedLora.sln"))) return directory.FullName;
        }
        throw new DirectoryNotFoundException($"no FedLora.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>Runs fedlora with its output redirected, as a script would; <paramref name="columns"/> null leaves COLUMNS unset.</summary>
    private static (int ExitCode, string Output) FedloraWithColumns(string? columns, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = RepositoryRoot(), RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fedlora.dll"));
        foreach (var arg in args) start.ArgumentList.Add(arg);
        start.Environment.Remove("COLUMNS");
        if (columns is not null) start.Environment["COLUMNS"] = columns;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"fedlora {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return (process.ExitCode, output.Result + error.Result);
    }

    // COLUMNS unset: the width of a redirected output, which wraps no line.
    private static (int ExitCode, string Output) Fedlora(params string[] args) => FedloraWithColumns(null, args);

    private static JsonElement LastJsonLine(string output) =>
        JsonDocument.Parse(output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Last(l => l.StartsWith('{'))).RootElement;

    private static double Metric(JsonElement json, string metric) =>
        json.GetProperty("metrics").EnumerateArray().Single(m => m.GetProperty("category").GetString() == "all" && m.GetProperty("metric").GetString() == metric)
            .GetProperty("value").GetDouble();

    private string ChoiceFile()
    {
        var path = Path.Combine(_scratch, "choices.jsonl");
        File.WriteAllLines(path,
        [
            """{"question": "What colour is the sky on a clear day?", "choices": ["Blue.", "Green.", "Purple with dots."], "answer": 0, "subject": "nature"}""",
            """{"question": "Which is a fruit?", "choices": ["A stone", "An apple"], "answer": "B", "subject": "food"}""",
            """{"question": "Name a king of England.", "choices": ["KING RICHARD III", "a spreadsheet", "the number seven"], "answer": "KING RICHARD III", "subject": "history"}""",
            """{"question": "Say something Shakespeare might.", "context": "Speak, my lord.", "choices": ["What say you, my lord?", "lol ok", "Compile the kernel."], "answer": 0, "subject": "history"}""",
            """{"question": "How many legs has a spider?", "choices": ["Eight", "Three", "Twelve", "None"], "answer": 0, "subject": "nature"}""",
            """{"question": "Is ice cold?", "choices": ["No", "Yes"], "answer": 1, "subject": "nature"}""",
        ]);
        return path;
    }

    /// <summary>log p(choice | prompt) the slow way: the model alone on one sequence, log-softmax in double.</summary>
    private static double LogLikelihood(Gpt model, string prompt, string choice)
    {
        var promptTokens = ByteTokenizer.Instance.Encode(prompt);
        int[] sequence = [.. promptTokens, .. ByteTokenizer.Instance.Encode(choice)];
        var time = sequence.Length - 1;
        model.Forward(1, time, sequence.AsSpan(0, time));
        var v = model.Config.VocabSize;
        var logits = new float[time * v];
        model.Backend.Download(model.Logits, logits);
        double sum = 0;
        for (var t = promptTokens.Length - 1; t < time; t++)
        {
            var row = logits.AsSpan(t * v, v);
            var max = double.NegativeInfinity;
            foreach (var z in row) max = Math.Max(max, z);
            double total = 0;
            foreach (var z in row) total += Math.Exp(z - max);
            sum += row[sequence[t + 1]] - max - Math.Log(total);
        }
        return sum;
    }

    [Fact]
    public void Evaluate_ClosedChoiceSet_AccuracyEqualsTheRecordsScoredOneByOne()
    {
        var path = ChoiceFile();
        var (exitCode, output) = Fedlora("evaluate", "--test", path, "--batch", "4", "--context", "128");
        Assert.True(exitCode == 0, output);
        var json = LastJsonLine(output);

        using var backend = new CpuBackend();
        using var model = GptCheckpoint.Load(Path.Combine(RepositoryRoot(), "models", "base.safetensors"), backend, 1, 128);
        var records = TaskFiles.Load(path);
        int right = 0, rightNormalized = 0;
        foreach (var record in records)
        {
            var prompt = InstructionTemplate.FormatPrompt(record.Instruction.Instruction, record.Instruction.Context);
            var scores = record.Choices!.Select(c => LogLikelihood(model, prompt, c)).ToArray();
            var perCharacter = scores.Select((s, i) => s / record.Choices![i].Length).ToArray();
            if (Array.IndexOf(scores, scores.Max()) == record.Answer) right++;
            if (Array.IndexOf(perCharacter, perCharacter.Max()) == record.Answer) rightNormalized++;
        }
        Assert.Equal((double)right / records.Count, Metric(json, "accuracy"), 12);
        Assert.Equal((double)rightNormalized / records.Count, Metric(json, "accuracy_norm"), 12);
        Assert.Equal(records.Count, json.GetProperty("records").GetInt32());
        Assert.Contains("history", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Evaluate_Text_ReportsLossAndItsPerplexity()
    {
        var path = Path.Combine(_scratch, "play.txt");
        var play = string.Concat(Enumerable.Repeat("ROMEO:\nBut soft, what light through yonder window breaks?\n\n", 8));
        File.WriteAllText(path, play);
        var (exitCode, output) = Fedlora("evaluate", "--text", path, "--context", "64");
        Assert.True(exitCode == 0, output);
        var json = LastJsonLine(output);
        var loss = json.GetProperty("loss").GetDouble();
        Assert.InRange(loss, 0.01, 6);
        Assert.Equal(Math.Exp(loss), json.GetProperty("perplexity").GetDouble(), 9);
        // Consecutive windows of 64 tokens, each predicting the next 64: every whole window's tokens.
        Assert.Equal((play.Length - 1) / 64 * 64, json.GetProperty("tokens").GetInt64());
    }

    [Fact]
    public void Simulate_FolderOfAlpacaFilesUnderAnyNames_HoldsOutAFractionAndEvaluates()
    {
        var folder = Directory.CreateDirectory(Path.Combine(_scratch, "mine")).FullName;
        foreach (var (name, topic) in new[] { ("hospital-a.jsonl", "fever"), ("clinic_b.json", "cough"), ("site 3.jsonl", "rash") })
        {
            var lines = Enumerable.Range(0, 12).Select(i => JsonSerializer.Serialize(new { instruction = $"Describe {topic} case {i}.", input = "", output = $"A {topic}, grade {i % 3}." }));
            File.WriteAllText(Path.Combine(folder, name), name.EndsWith(".json", StringComparison.Ordinal) ? "[" + string.Join(",", lines) + "]" : string.Join("\n", lines));
        }
        var output = Path.Combine(_scratch, "run");
        var (exitCode, text) = Fedlora([.. "simulate --method fedit --ranks 4,4,4 --eval-every 1 --eval-max-tokens 4".Split(' '), .. Tiny.Split(','), "--data", folder, "--out", output]);
        Assert.True(exitCode == 0, text);
        Assert.Contains("3 clients (33 examples", text, StringComparison.Ordinal);
        Assert.Contains("test: 3 records from 0.1 of every client's records, held out", text, StringComparison.Ordinal);
        var csv = File.ReadAllLines(Path.Combine(output, "rounds.csv"));
        Assert.EndsWith(",exact_match,rouge_l", csv[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_TaskMetricsOn_SameLossesAsWithThemOff()
    {
        var test = ChoiceFile();
        string[] job = [.. "simulate --method fslora".Split(' '), .. Tiny.Split(','), "--test", test];
        var (offCode, offText) = Fedlora([.. job, "--out", Path.Combine(_scratch, "off")]);
        var (onCode, onText) = Fedlora([.. job, "--eval-every", "1", "--out", Path.Combine(_scratch, "on")]);
        Assert.True(offCode == 0, offText);
        Assert.True(onCode == 0, onText);
        var off = File.ReadAllLines(Path.Combine(_scratch, "off", "rounds.csv"));
        var on = File.ReadAllLines(Path.Combine(_scratch, "on", "rounds.csv"));
        Assert.EndsWith(",accuracy,accuracy_norm", on[0], StringComparison.Ordinal);
        // Every column but the wall time (and the metrics appended to the right) is the same.
        for (var i = 1; i < off.Length; i++)
        {
            var (a, b) = (off[i].Split(','), on[i].Split(','));
            Assert.Equal(a[..^1], b[..(a.Length - 1)]);
            Assert.InRange(double.Parse(b[^2], CultureInfo.InvariantCulture), 0, 1);
        }
    }

    [Fact]
    public void Simulate_PooledFileSplitByAClientField_OneClientPerValue()
    {
        var path = Path.Combine(_scratch, "pool.json");
        var records = Enumerable.Range(0, 30).Select(i => new { instruction = $"Question {i}?", response = $"Answer {i}.", category = i % 2 == 0 ? "even" : "odd", hospital = $"h{i % 3}" });
        File.WriteAllText(path, JsonSerializer.Serialize(records));
        var (exitCode, text) = Fedlora([.. "simulate --partition field:hospital --ranks 2,4,8".Split(' '), .. Tiny.Split(','), "--data", path, "--out", Path.Combine(_scratch, "run")]);
        Assert.True(exitCode == 0, text);
        Assert.Contains("3 clients (27 examples, field:hospital partition", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_PooledFileWithoutPartition_SaysHowToSplitIt()
    {
        var path = Path.Combine(_scratch, "pool.jsonl");
        File.WriteAllText(path, "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\", \"output\": \"d\"}\n");
        var (exitCode, text) = Fedlora("simulate", "--data", path);
        Assert.Equal(2, exitCode);
        Assert.Contains("one pooled file: split it with --partition iid, dirichlet:ALPHA or field:NAME", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_MalformedRecord_NamesFileLineAndField()
    {
        var folder = Directory.CreateDirectory(Path.Combine(_scratch, "bad")).FullName;
        File.WriteAllText(Path.Combine(folder, "a.jsonl"), "{\"instruction\": \"x\", \"output\": \"y\"}\n");
        File.WriteAllText(Path.Combine(folder, "b.jsonl"), "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"x\", \"output\": 3}\n");
        var (exitCode, text) = Fedlora("simulate", "--data", folder, "--ranks", "4,4");
        Assert.NotEqual(0, exitCode);
        Assert.Contains("b.jsonl: line 2: field 'output' must be a string, found Number", text, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_SpeakerPartition_TrainsOnShakespearesSpeakers()
    {
        var output = Path.Combine(_scratch, "speakers");
        var (exitCode, text) = Fedlora([.. "simulate --partition speaker --clients 4 --ranks 8,4,4,2".Split(' '), .. Tiny.Split(','), "--out", output]);
        Assert.True(exitCode == 0, text);
        Assert.Contains("4 clients by speaker", text, StringComparison.Ordinal);
        Assert.Contains("client 03", File.ReadAllText(Path.Combine(output, "rounds.csv")), StringComparison.Ordinal);
    }

    [Fact]
    public void Evaluate_OutputRedirectedWithoutColumns_TablesDoNotWrap()
    {
        var category = "a_category_name_long_enough_that_an_eighty_column_table_would_have_to_wrap_it_inside_its_cell";
        var path = Path.Combine(_scratch, "wide.jsonl");
        File.WriteAllText(path, $$"""{"question": "Yes?", "choices": ["yes", "no"], "answer": 0, "subject": "{{category}}"}""" + "\n");
        var (exitCode, text) = FedloraWithColumns(columns: null, "evaluate", "--test", path, "--context", "32");
        Assert.True(exitCode == 0, text);
        Assert.Contains($"│ {category} │", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Generate_Context_GoesIntoTheInstructionTemplate()
    {
        var (exitCode, text) = Fedlora("generate", "--prompt", "Who speaks?", "--context", "ROMEO: hello", "--max-tokens", "5", "--temperature", "0");
        Assert.True(exitCode == 0, text);
        var (plainCode, plain) = Fedlora("generate", "--prompt", "Who speaks?", "--instruction", "--max-tokens", "5", "--temperature", "0");
        Assert.True(plainCode == 0, plain);
        Assert.NotEqual(plain, text);
    }

    [Theory]
    [InlineData(0.37, 0.5)]
    [InlineData(1.0, 1.0)]
    [InlineData(1.2, 2.0)]
    [InlineData(3, 5)]
    [InlineData(7, 10)]
    [InlineData(0.013, 0.02)]
    public void NiceStep_IsOneTwoOrFiveTimesAPowerOfTen(double rough, double expected) => Assert.Equal(expected, SvgPlot.NiceStep(rough), 12);

    [Fact]
    public void Ticks_AreWholeMultiplesOfTheStep()
    {
        Assert.Equal([0.0, 5, 10, 15, 20], SvgPlot.Ticks(0, 20, 5));
        Assert.Equal([2.15, 2.2, 2.25], SvgPlot.Ticks(2.137, 2.26, 0.05).Select(x => Math.Round(x, 10)));
        var svg = SvgPlot.Lines("t", "round", "loss", [("m", [(0.0, 2.0), (1.0, 1.9), (37.0, 1.7)])]);
        Assert.Contains(">35</text>", svg, StringComparison.Ordinal);
        Assert.DoesNotContain(">3</text>", svg, StringComparison.Ordinal);
    }
}
