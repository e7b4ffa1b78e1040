namespace FedLora.Model.Data;

/// <summary>One instruction-tuning record, as in databricks-dolly-15k.</summary>
/// <param name="Instruction">What the model is asked to do.</param>
/// <param name="Context">Optional supporting text (empty when absent).</param>
/// <param name="Response">The reference answer: the only part the loss counts.</param>
/// <param name="Category">The task category (e.g. open_qa, summarization); empty when absent.</param>
public sealed record InstructionRecord(string Instruction, string Context, string Response, string Category);
