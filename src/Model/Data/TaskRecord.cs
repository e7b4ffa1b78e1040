namespace FedLora.Model.Data;

/// <summary>
/// One record of a task file, whatever its layout: the instruction record every method trains on
/// (prompt, then the reference answer), and for closed-choice and classification records the
/// choices and the index of the right one.
/// </summary>
/// <param name="Instruction">The record as instruction text: for a closed-choice record the question, and as response the right choice.</param>
/// <param name="Choices">The choices of a closed-choice or classification record; null for a free-form record.</param>
/// <param name="Answer">The index of the right choice in <paramref name="Choices"/>; -1 for a free-form record.</param>
/// <param name="Client">The value of the client-id field when one was asked for (pooled files split by client), else null.</param>
public sealed record TaskRecord(InstructionRecord Instruction, IReadOnlyList<string>? Choices = null, int Answer = -1, string? Client = null)
{
    /// <summary>Whether the record is scored by choosing among <see cref="Choices"/> (closed-choice or classification).</summary>
    public bool IsClosedChoice => Choices is not null;
}

/// <summary>The record layouts <see cref="TaskFiles"/> reads, recognised from a file's first record.</summary>
public enum TaskLayout
{
    /// <summary>Shepherd / databricks-dolly-15k: instruction, context, response, category.</summary>
    Dolly,

    /// <summary>Alpaca: instruction, input, output.</summary>
    Alpaca,

    /// <summary>MMLU's closed-choice layout: question, choices, answer (an index, a letter or the choice's text), subject.</summary>
    ClosedChoice,

    /// <summary>Classification: text, label (one of a declared label set), optionally instruction.</summary>
    Classification,
}

/// <summary>How to read task files.</summary>
/// <param name="Labels">The declared label set of classification records (required for them, ignored otherwise).</param>
/// <param name="ClientField">A field every record must carry, whose value names the record's client (for pooled files split by client).</param>
public sealed record TaskFileOptions(IReadOnlyList<string>? Labels = null, string? ClientField = null);
