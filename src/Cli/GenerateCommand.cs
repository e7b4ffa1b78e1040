using System.CommandLine;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Cli;

/// <summary><c>fedlora generate</c>: sample text from a base model, optionally with an adapter.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var prompt = new Option<string>("--prompt") { Description = "The text to continue (or, with --instruction, the instruction to answer)", Required = true };
        var instruction = new Option<bool>("--instruction") { Description = "Wrap the prompt in the instruction template and stop at end-of-text" };
        var context = new Option<string?>("--context") { Description = "The instruction's context (a passage to answer from); implies --instruction" };
        var adapter = new Option<string?>("--adapter") { Description = "A LoRA adapter file (from finetune or simulate) to apply" };
        var tokens = CommonOptions.Positive("--max-tokens", "Tokens to generate at most", 200);
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature (0: greedy)", DefaultValueFactory = _ => 0.8f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k likeliest tokens (0: all)", DefaultValueFactory = _ => 40 };
        var model = CommonOptions.BaseModel();
        var device = CommonOptions.Device();
        var seed = CommonOptions.Seed();
        var command = new Command("generate", "Sample text from a model, optionally with a LoRA adapter")
        {
            prompt, instruction, context, adapter, tokens, temperature, topK, model, device, seed,
        };
        command.SetAction(parse => Verb.Run(() =>
        {
            var sampler = new Sampler(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(seed));
            var text = parse.GetValue(prompt)!;
            var instructionContext = parse.GetValue(context);
            var asInstruction = parse.GetValue(instruction) || instructionContext is not null;
            var promptTokens = ByteTokenizer.Instance.Encode(asInstruction ? InstructionTemplate.FormatPrompt(text, instructionContext ?? "") : text);
            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!);
            var modelPath = Paths.RequireFile(parse.GetValue(model)!, "model", "Pass --model PATH to a checkpoint.");
            using var gpt = GptCheckpoint.Load(modelPath, backend, 1, int.MaxValue);
            AdapterSet? adapters = null;
            if (parse.GetValue(adapter) is { } adapterPath)
            {
                adapters = AdapterFile.Open(SafetensorsFile.Load(Paths.RequireFile(adapterPath, "adapter", "Pass --adapter PATH to an adapter file.")), backend);
                gpt.Attach(adapters);
            }
            using (adapters)
            {
                var output = Generation.Generate(gpt, promptTokens, parse.GetValue(tokens), sampler, asInstruction ? ByteTokenizer.EndOfText : null);
                var generated = output.Length > 0 && output[^1] == ByteTokenizer.EndOfText ? output[..^1] : output;
                Console.WriteLine((asInstruction ? "" : text) + ByteTokenizer.Instance.Decode(generated));
            }
            return 0;
        }));
        return command;
    }
}
