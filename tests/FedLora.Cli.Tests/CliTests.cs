using System.Diagnostics;
using FedLora.Kernels.Cpu;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Cli.Tests;

/// <summary>
/// The fedlora command as a user runs it (a child process from the repository root): bad input fails
/// before any work with a message that says what to change, and small real runs write their results.
/// </summary>
public sealed class CliTests : IDisposable
{
    private readonly string _scratch = Directory.CreateTempSubdirectory("fedlora-cli-").FullName;

    public void Dispose() => Directory.Delete(_scratch, recursive: true);

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "FedLora.sln"))) return directory.FullName;
        }
        throw new DirectoryNotFoundException($"no FedLora.sln above {AppContext.BaseDirectory}");
    }

    private static (int ExitCode, string Output) Fedlora(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = RepositoryRoot(), RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fedlora.dll"));
        foreach (var arg in args) start.ArgumentList.Add(arg);
        start.Environment["COLUMNS"] = "200";
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

    private const string Tiny = "--rounds,1,--clients-per-round,2,--local-steps,1,--batch,2,--context,32";

    [Theory]
    [InlineData("simulate --method fedsgd", "'fedsgd' is unknown")]
    [InlineData("simulate --ranks 4,4", "2 budgets but there are 10 clients")]
    [InlineData("simulate --ranks 512,4,4,4,4,4,4,4,4,4", "exceeds")]
    [InlineData("simulate --method fslora --ratios 1.5,1,1,1,1,1,1,1,1,1", "(0, 1]")]
    [InlineData("simulate --clients-per-round 11", "exceeds the 10 clients")]
    [InlineData("simulate --partition random", "not natural, iid, dirichlet:ALPHA")]
    [InlineData("simulate --targets everything", "unknown layer 'everything'")]
    [InlineData("simulate --device tpu", "unknown device 'tpu'")]
    [InlineData("compare --methods fslora,nope", "unknown nope")]
    [InlineData("simulate --method flora --dp-clip 1 --dp-noise 1", "not available for FLoRA")]
    [InlineData("simulate --dp-clip 1 --dp-epsilon 2", "needs a delta too")]
    [InlineData("simulate --dp-noise 1", "needs --dp-clip")]
    [InlineData("simulate --dp-clip 0 --dp-noise 1", "give a finite clip > 0")]
    [InlineData("pretrain --channels 100 --heads 3", "divide the channels")]
    public void BadOption_FailsBeforeWork_WithAMessageNamingIt(string command, string message)
    {
        var (exitCode, output) = Fedlora(command.Split(' '));
        Assert.NotEqual(0, exitCode);
        Assert.Contains(message, output, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_MissingDataFolder_SaysWhereItLooked()
    {
        var missing = Path.Combine(_scratch, "nowhere");
        var (exitCode, output) = Fedlora("simulate", "--data", missing);
        Assert.Equal(2, exitCode);
        Assert.Contains(missing, output, StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_MalformedClientFile_NamesTheFile()
    {
        var dolly = Directory.CreateDirectory(Path.Combine(_scratch, "data", "dolly15k-fedit-10")).FullName;
        foreach (var file in Directory.GetFiles(Path.Combine(RepositoryRoot(), "data", "dolly15k-fedit-10")))
        {
            File.Copy(file, Path.Combine(dolly, Path.GetFileName(file)));
        }
        File.WriteAllText(Path.Combine(dolly, "local_training_3.json"), "[{\"instruction\": \"unterminated");
        var (exitCode, output) = Fedlora("simulate", "--data", Path.Combine(_scratch, "data"));
        Assert.NotEqual(0, exitCode);
        Assert.Contains("local_training_3.json", output, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_TinyRun_WritesRoundsAndTheGlobalAdapter()
    {
        var output = Path.Combine(_scratch, "run");
        var (exitCode, text) = Fedlora([.. "simulate --method flexlora".Split(' '), .. Tiny.Split(','), "--out", output]);
        Assert.True(exitCode == 0, text);
        var csv = File.ReadAllLines(Path.Combine(output, "rounds.csv"));
        Assert.Equal(3, csv.Length);
        Assert.StartsWith("method,round,loss_all,", csv[0], StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(output, "results.json")));
        Assert.True(File.Exists(Path.Combine(output, "adapter", "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(output, "adapter", "adapter_config.json")));
    }

    [Fact]
    public void Simulate_HuggingFaceFolder_WritesAPeftAdapterFolderThatGenerateLoads()
    {
        var model = Path.Combine(RepositoryRoot(), "tests", "fixtures", "hf-gpt2-tiny");
        var output = Path.Combine(_scratch, "hf");
        var (exitCode, text) = Fedlora([.. "simulate --method fslora --ranks 4,4,2,2,2,2,2,2,2,2".Split(' '), .. Tiny.Split(','), "--model", model, "--out", output]);
        Assert.True(exitCode == 0, text);
        var config = File.ReadAllText(Path.Combine(output, "adapter", "adapter_config.json"));
        Assert.Contains("\"peft_type\": \"LORA\"", config, StringComparison.Ordinal);
        Assert.Contains(model.Replace("\\", "\\\\", StringComparison.Ordinal), config, StringComparison.Ordinal);
        var (generated, generatedText) = Fedlora("generate", "--model", model, "--adapter", Path.Combine(output, "adapter"), "--prompt", "The capital", "--max-tokens", "5", "--temperature", "0");
        Assert.True(generated == 0, generatedText);
        Assert.StartsWith("The capital", generatedText, StringComparison.Ordinal);
    }

    [Fact]
    public void Simulate_HuggingFaceFolderWithUnknownArchitecture_FailsNamingIt()
    {
        var folder = Path.Combine(_scratch, "llama");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), "{\"architectures\": [\"LlamaForCausalLM\"]}");
        var (exitCode, output) = Fedlora("simulate", "--model", folder);
        Assert.NotEqual(0, exitCode);
        Assert.Contains("architecture 'LlamaForCausalLM' is not supported", output.ReplaceLineEndings(""), StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Compare_TwoMethods_WritesTableAndPlot()
    {
        var output = Path.Combine(_scratch, "compare");
        var (exitCode, text) = Fedlora([.. "compare --methods fslora,flora".Split(' '), .. Tiny.Split(','), "--out", output]);
        Assert.True(exitCode == 0, text);
        Assert.Contains("final loss", text, StringComparison.Ordinal);
        var svg = File.ReadAllText(Path.Combine(output, "heldout-loss.svg"));
        Assert.Equal(2, svg.Split("<polyline").Length - 1);
        Assert.Contains(">flora<", svg, StringComparison.Ordinal);
    }

    [Fact]
    public void Compare_WithDp_RunsEachMethodWithAndWithoutAndReportsEpsilon()
    {
        var output = Path.Combine(_scratch, "compare-dp");
        var (exitCode, text) = Fedlora([.. "compare --methods fedit,flora".Split(' '), .. Tiny.Split(','), "--dp-clip", "0.5", "--dp-epsilon", "8", "--dp-delta", "1e-5", "--out", output]);
        Assert.True(exitCode == 0, text);
        Assert.Contains("fedit+dp", text, StringComparison.Ordinal);
        Assert.Contains("epsilon", text, StringComparison.Ordinal);
        Assert.Contains("flora runs without DP only", text, StringComparison.Ordinal);
        using var results = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "results.json")));
        var runs = results.RootElement.GetProperty("runs").EnumerateArray().ToArray();
        Assert.Equal(["fedit", "fedit+dp", "flora"], runs.Select(run => run.GetProperty("method").GetString()));
        var epsilon = runs[1].GetProperty("privacy").GetProperty("epsilon").GetDouble();
        Assert.InRange(epsilon, 7.8, 8);
        Assert.Equal(epsilon, runs[1].GetProperty("rounds")[0].GetProperty("privacy").GetProperty("epsilon").GetDouble());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, runs[0].GetProperty("privacy").ValueKind);
    }

    [Fact]
    public void Generate_WithAFinetunedAdapter_PrintsTheAdaptedModelsText()
    {
        var adapter = Path.Combine(_scratch, "adapter");
        var (trained, trainText) = Fedlora("finetune", "--steps", "4", "--batch", "2", "--context", "32", "--rank", "4", "--lr", "0.05", "--out", adapter);
        Assert.True(trained == 0, trainText);
        const string Prompt = "What is a tree?";

        var (exitCode, text) = Fedlora("generate", "--prompt", Prompt, "--instruction", "--adapter", adapter, "--max-tokens", "20", "--temperature", "0");

        Assert.True(exitCode == 0, text);
        var withAdapter = GreedyAnswer(Prompt, adapter);
        var withoutAdapter = GreedyAnswer(Prompt, adapterPath: null);
        Assert.True(withAdapter != withoutAdapter, $"the fine-tuned adapter does not change the answer, so this test could not tell whether it is applied: '{withAdapter}'");
        Assert.Equal(withAdapter + Environment.NewLine, text);
    }

    /// <summary>The greedy answer of the shipped base model, with the adapter folder attached when given, computed in this process.</summary>
    private static string GreedyAnswer(string prompt, string? adapterPath)
    {
        using var backend = new CpuBackend();
        using var gpt = GptCheckpoint.Load(Path.Combine(RepositoryRoot(), "models", "base.safetensors"), backend, 1, int.MaxValue);
        using var adapters = adapterPath is null ? null : PeftAdapter.Open(adapterPath, backend);
        gpt.Attach(adapters);
        var tokens = ByteTokenizer.Instance.Encode(InstructionTemplate.FormatPrompt(prompt, ""));
        var output = Generation.Generate(gpt, tokens, 20, new Sampler(0, 0, seed: 0), ByteTokenizer.EndOfText);
        return ByteTokenizer.Instance.Decode(output.Length > 0 && output[^1] == ByteTokenizer.EndOfText ? output[..^1] : output);
    }
}
