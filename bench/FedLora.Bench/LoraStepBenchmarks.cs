using BenchmarkDotNet.Attributes;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.Training;

namespace FedLora.Bench;

/// <summary>
/// One LoRA fine-tuning step of the GPT (forward, backward, AdamW on the adapters; base frozen)
/// at the configurations the PyTorch peer (bench/peers/lora_step_torch.py) also runs: the shipped
/// model's byte-level shapes, and GPT-2 124M's (V = 50,257, so the head's cross-entropy runs over
/// chunks of rows). Tokens per second = B*T / the mean time of one step.
/// </summary>
[MemoryDiagnoser]
public class LoraStepBenchmarks : IDisposable
{
    private Backend _backend = null!;
    private Gpt _model = null!;
    private AdapterSet _adapters = null!;
    private AdamWOptimizer _optimizer = null!;
    private int[] _tokens = [];
    private int[] _targets = [];

    /// <summary>
    /// "L4-C128" or "L6-C256" (heads 4 and 8, V = 257, B = 8), or "GPT2-124M" (L = 12, C = 768, 12
    /// heads, V = 50,257, B = 4); T = 256 and r = 16 on all four linears for all.
    /// </summary>
    [Params("L4-C128", "L6-C256", "GPT2-124M")]
    public string Config { get; set; } = "L4-C128";

    /// <summary>B of the byte-level configs.</summary>
    public const int Batch = 8;

    public const int Time = 256, Rank = 16;

    /// <summary>The configurations, in the peer's order.</summary>
    public static readonly string[] Configs = ["L4-C128", "L6-C256", "GPT2-124M"];

    /// <summary>B of a configuration.</summary>
    public static int BatchOf(string name) => name == "GPT2-124M" ? 4 : Batch;

    /// <summary>The backend the step runs on (the Cpu backend; a profiling one for `--profile-lora-step`).</summary>
    internal Func<Backend> CreateBackend { get; init; } = () => new CpuBackend();

    public static GptConfig ModelConfig(string name) => name switch
    {
        "L4-C128" => new GptConfig(VocabSize: 257, ContextLength: Time, Layers: 4, Channels: 128, Heads: 4),
        "L6-C256" => new GptConfig(VocabSize: 257, ContextLength: Time, Layers: 6, Channels: 256, Heads: 8),
        "GPT2-124M" => new GptConfig(VocabSize: 50257, ContextLength: Time, Layers: 12, Channels: 768, Heads: 12),
        _ => throw new ArgumentException($"unknown config {name}", nameof(name)),
    };

    [GlobalSetup]
    public void Setup()
    {
        _backend = CreateBackend();
        var batch = BatchOf(Config);
        _model = new Gpt(_backend, ModelConfig(Config), batch, Time);
        _model.InitializeParameters(new Random(1));
        _adapters = new AdapterSet(_backend, _model.Layout.LoraModules(LoraTargets.All), Rank, alpha: 2 * Rank, LoraScaling.Standard);
        _adapters.Initialize(new Random(2));
        _model.Attach(_adapters);
        _optimizer = new AdamWOptimizer(_backend, _adapters.Parameters.Length, new AdamWSettings(LearningRate: 1e-3f));
        var random = new Random(3);
        _tokens = new int[batch * Time];
        _targets = new int[batch * Time];
        var vocab = _model.Config.VocabSize;
        for (var i = 0; i < _tokens.Length; i++)
        {
            _tokens[i] = random.Next(vocab);
            _targets[i] = random.Next(vocab);
        }
        // Check once before timing: a few steps on one batch must lower its loss.
        var first = Step();
        var last = first;
        for (var i = 0; i < 4; i++) last = Step();
        if (!(last < first)) throw new InvalidOperationException($"LoRA steps did not lower the loss ({first} -> {last})");
    }

    /// <summary>Bytes held on the backend: the model (weights, activations, gradient scratch), adapters, their gradients and AdamW moments.</summary>
    public long AllocatedBytes => _model.AllocatedBytes + 8L * _adapters.Parameters.Length + _optimizer.AllocatedBytes;

    [Benchmark]
    public float Step()
    {
        _model.ZeroGradients();
        var loss = _model.Forward(_tokens.Length / Time, Time, _tokens, _targets, training: true);
        _model.Backward();
        _optimizer.Step(_adapters.Parameters, _adapters.Gradients, 1e-3f);
        return loss;
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _optimizer?.Dispose();
        _adapters?.Dispose();
        _model?.Dispose();
        _backend?.Dispose();
        GC.SuppressFinalize(this);
    }
}
