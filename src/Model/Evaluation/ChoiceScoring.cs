using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Model.Evaluation;

/// <summary>
/// A closed-choice record scored as lm-evaluation-harness scores MMLU-style tasks: the
/// log-likelihood of each choice's tokens after the prompt; the highest wins (raw), or the highest
/// per character of the choice (length-normalised, the harness's acc_norm).
/// </summary>
/// <param name="LogLikelihoods">log p(choice | prompt) of each choice: the sum over its tokens.</param>
/// <param name="Characters">Each choice's length in Unicode code points.</param>
/// <param name="Answer">The index of the right choice.</param>
public sealed record ChoiceScores(double[] LogLikelihoods, int[] Characters, int Answer)
{
    /// <summary>The choice of highest log-likelihood; a tie goes to the lowest index (numpy's argmax, as the harness uses).</summary>
    public int Predicted => ArgMax(LogLikelihoods);

    /// <summary>The choice of highest log-likelihood per character; ties to the lowest index.</summary>
    public int PredictedNormalized => ArgMax(LogLikelihoods.Select((ll, i) => ll / Characters[i]).ToArray());

    /// <summary>The index of the first largest value.</summary>
    public static int ArgMax(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count == 0) throw new ArgumentException("no values to choose from", nameof(values));
        var best = 0;
        for (var i = 1; i < values.Count; i++)
        {
            if (values[i] > values[best]) best = i;
        }
        return best;
    }
}

/// <summary>Computes <see cref="ChoiceScores"/> with a model, many choices per forward pass.</summary>
public static class ChoiceScoring
{
    /// <summary>
    /// Scores every closed-choice record of <paramref name="records"/> (in order) with
    /// <paramref name="model"/>: each (record, choice) pair is one row of (B,T) batches, B =
    /// <paramref name="batch"/> and T = <paramref name="context"/>.
    /// </summary>
    /// <remarks>
    /// A row is the prompt (<see cref="InstructionTemplate.FormatPrompt"/>) then the choice, each
    /// encoded by <paramref name="tokenizer"/>; the targets counted are the choice's tokens. A
    /// sequence longer than T+1 tokens keeps its last T+1 (the prompt is cut from the left, as the
    /// harness does); a choice longer than T is scored on its last T tokens. Padding after a row's
    /// end cannot change its scores: attention is causal.
    /// </remarks>
    public static IReadOnlyList<ChoiceScores> Score(Gpt model, ITokenizer tokenizer, IReadOnlyList<TaskRecord> records, int batch, int context)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(records);
        if (batch < 1 || batch > model.MaxBatch) throw new ArgumentOutOfRangeException(nameof(batch), batch, $"the batch must be in [1, {model.MaxBatch}] (the model's)");
        if (context < 1 || context > model.MaxTime) throw new ArgumentOutOfRangeException(nameof(context), context, $"the context must be in [1, {model.MaxTime}] (the model's)");
        var rows = new List<(int Record, int Choice, int[] Tokens, int PromptLength)>();
        for (var r = 0; r < records.Count; r++)
        {
            var record = records[r];
            if (!record.IsClosedChoice) throw new ArgumentException($"record {r} has no choices", nameof(records));
            var prompt = tokenizer.Encode(InstructionTemplate.FormatPrompt(record.Instruction.Instruction, record.Instruction.Context));
            for (var c = 0; c < record.Choices!.Count; c++)
            {
                var choice = tokenizer.Encode(record.Choices[c]);
                if (choice.Length == 0) throw new ArgumentException($"record {r}: choice {c} encodes to no tokens", nameof(records));
                rows.Add((r, c, [.. prompt, .. choice], prompt.Length));
            }
        }

        var logLikelihoods = records.Select(r => new double[r.Choices!.Count]).ToArray();
        var tokens = new int[batch * context];
        var targets = new int[batch * context];
        var losses = new float[batch * context];
        for (var first = 0; first < rows.Count; first += batch)
        {
            tokens.AsSpan().Fill(tokenizer.EndOfText);
            targets.AsSpan().Fill(-1);
            var count = Math.Min(batch, rows.Count - first);
            for (var i = 0; i < count; i++) WriteRow(rows[first + i].Tokens, rows[first + i].PromptLength, context, tokens.AsSpan(i * context, context), targets.AsSpan(i * context, context));
            model.Forward(batch, context, tokens, targets);
            model.CopyPositionLosses(losses);
            for (var i = 0; i < count; i++)
            {
                double sum = 0;
                foreach (var loss in losses.AsSpan(i * context, context)) sum += loss;
                logLikelihoods[rows[first + i].Record][rows[first + i].Choice] = -sum;
            }
        }
        return records.Select((record, r) =>
            new ChoiceScores(logLikelihoods[r], record.Choices!.Select(TextMetrics.Characters).ToArray(), record.Answer)).ToArray();
    }

    /// <summary>Inputs and targets of one row: the last T+1 tokens of the sequence, targets counted from the prompt's end.</summary>
    private static void WriteRow(int[] sequence, int promptLength, int context, Span<int> inputs, Span<int> targets)
    {
        var start = Math.Max(0, sequence.Length - (context + 1));
        var length = Math.Min(context, sequence.Length - start);
        sequence.AsSpan(start, length).CopyTo(inputs);
        for (var i = 0; i < length; i++)
        {
            var target = start + i + 1;
            if (target < sequence.Length && target >= promptLength) targets[i] = sequence[target];
        }
    }
}
