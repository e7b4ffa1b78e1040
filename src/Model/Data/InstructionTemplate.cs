using FedLora.Model.Tokenization;

namespace FedLora.Model.Data;

/// <summary>
/// Turns an instruction record into training text. The prompt is
/// <code>
/// ### Context:
/// {context}
///
/// ### Instruction:
/// {instruction}
///
/// ### Response:
///
/// </code>
/// (the context section only when the context is not blank), and the example is the prompt, then
/// the response, then the end-of-text token. Fields are trimmed. The context comes before the
/// instruction so that when a long example must be cut from the left to fit the context window
/// (see <see cref="InstructionBatcher"/>), the part cut is the context, and the instruction stays
/// next to the response.
/// </summary>
public static class InstructionTemplate
{
    /// <summary>The prompt text for an instruction and an optional context, ending "### Response:\n".</summary>
    public static string FormatPrompt(string instruction, string context)
    {
        ArgumentNullException.ThrowIfNull(instruction);
        ArgumentNullException.ThrowIfNull(context);
        var contextSection = string.IsNullOrWhiteSpace(context) ? "" : $"### Context:\n{context.Trim()}\n\n";
        return $"{contextSection}### Instruction:\n{instruction.Trim()}\n\n### Response:\n";
    }

    /// <summary>
    /// Tokens of prompt + response + end-of-text in the byte-level tokenizer, with the prompt's length:
    /// the loss counts the targets at positions PromptLength and after (the response and
    /// end-of-text), not the prompt.
    /// </summary>
    public static InstructionExample Tokenize(InstructionRecord record) => Tokenize(record, ByteTokenizer.Instance);

    /// <summary>
    /// Tokens of prompt + response + end-of-text in <paramref name="tokenizer"/>. Prompt and response are
    /// encoded separately, so the prompt's tokens are the same whatever the response (a BPE could
    /// otherwise merge across the boundary).
    /// </summary>
    public static InstructionExample Tokenize(InstructionRecord record, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(record);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var prompt = tokenizer.Encode(FormatPrompt(record.Instruction, record.Context));
        var response = tokenizer.Encode(record.Response.Trim());
        var tokens = new int[prompt.Length + response.Length + 1];
        prompt.CopyTo(tokens, 0);
        response.CopyTo(tokens, prompt.Length);
        tokens[^1] = tokenizer.EndOfText;
        return new InstructionExample(tokens, prompt.Length);
    }
}

/// <summary>A tokenized instruction example: prompt tokens, then response tokens and end-of-text.</summary>
public sealed class InstructionExample
{
    /// <summary>Creates an example; the first <paramref name="promptLength"/> tokens are the prompt.</summary>
    public InstructionExample(int[] tokens, int promptLength)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentOutOfRangeException.ThrowIfNegative(promptLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(promptLength, tokens.Length);
        Tokens = tokens;
        PromptLength = promptLength;
    }

    /// <summary>All tokens: prompt, response, end-of-text.</summary>
    public int[] Tokens { get; }

    /// <summary>The number of prompt tokens; tokens at this index and after are counted by the loss.</summary>
    public int PromptLength { get; }

    /// <summary>The number of counted tokens: the response and the closing end-of-text.</summary>
    public int ResponseLength => Tokens.Length - PromptLength;
}
