using System.CommandLine;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.Data;

namespace FedLora.Cli;

/// <summary><c>fedlora generate</c>: sample text from a base model, optionally with an adapter.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var prompt = new Option<string>("--prompt") { Description = "The text to continue (or, with --instruction, the instruction to answer)", Required = true };
        var instruction = new Option<bool>("--instruction") { Description = "Wrap the prompt in the instruction template and stop at end-of-text" };
        var context = new Option<string?>("--context") { Description = "The instruction's context (a passage to answer from); implies --instruction" };
        var adapter = new Option<string?>("--adapter") { Description = "A LoRA adapter to apply: a peft adapter folder (from finetune, simulate, serve or peft) or a FedLora adapter file" };
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
            var modelPath = parse.GetValue(model)!;
            var tokenizer = CommonOptions.LoadTokenizer(modelPath);
            var promptTokens = tokenizer.Encode(asInstruction ? InstructionTemplate.FormatPrompt(text, instructionContext ?? "") : text);
            if (promptTokens.Length == 0) throw new UsageException("--prompt is empty: give some text to continue");
            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!);
            using var gpt = CommonOptions.LoadModel(modelPath, backend, 1, int.MaxValue, upToModelContext: true);
            AdapterSet? adapters = null;
            if (parse.GetValue(adapter) is { } adapterPath)
            {
                adapters = CommonOptions.LoadAdapter(adapterPath, backend);
                try
                {
                    gpt.Attach(adapters);
                }
                catch (ArgumentException e)
                {
                    adapters.Dispose();
                    throw new UsageException($"--adapter {adapterPath} does not fit --model {modelPath}: {e.Message}");
                }
            }
            using (adapters)
            {
                var output = Generation.Generate(gpt, promptTokens, parse.GetValue(tokens), sampler, asInstruction ? tokenizer.EndOfText : null);
                var generated = output.Length > 0 && output[^1] == tokenizer.EndOfText ? output[..^1] : output;
                Console.WriteLine((asInstruction ? "" : text) + tokenizer.Decode(generated));
            }
            return 0;
        }));
        return command;
    }
}
