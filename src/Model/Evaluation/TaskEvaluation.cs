using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Model.Evaluation;

/// <summary>The task metrics FedLora reports.</summary>
public static class TaskMetric
{
    /// <summary>Closed-choice accuracy: the choice of highest log-likelihood is the answer.</summary>
    public const string Accuracy = "accuracy";

    /// <summary>Closed-choice accuracy with log-likelihoods per character (lm-evaluation-harness's acc_norm).</summary>
    public const string AccuracyNormalized = "accuracy_norm";

    /// <summary>Free-form: the greedy answer equals the reference after normalisation.</summary>
    public const string ExactMatch = "exact_match";

    /// <summary>Free-form: ROUGE-L F1 of the greedy answer against the reference.</summary>
    public const string RougeL = "rouge_l";

    /// <summary>The name of the row over every category.</summary>
    public const string All = "all";
}

/// <summary>One metric over one category of the test set.</summary>
/// <param name="Category">The category, or <see cref="TaskMetric.All"/>.</param>
/// <param name="Metric">One of <see cref="TaskMetric"/>'s names.</param>
/// <param name="Count">The records scored.</param>
/// <param name="Value">The mean score in [0, 1].</param>
/// <param name="Low">The 95% interval's lower bound (Wilson for proportions, normal for ROUGE-L; NaN when undefined).</param>
/// <param name="High">The 95% interval's upper bound.</param>
public sealed record MetricResult(string Category, string Metric, int Count, double Value, double Low, double High);

/// <summary>How to evaluate.</summary>
/// <param name="Batch">Rows per forward pass when scoring choices.</param>
/// <param name="Context">Tokens per row (at most the model's).</param>
/// <param name="MaxNewTokens">The longest greedy answer generated for a free-form record.</param>
/// <param name="FreeForm">Whether free-form records are answered and scored (greedy generation: the slow part).</param>
public sealed record TaskEvaluationOptions(int Batch, int Context, int MaxNewTokens = 64, bool FreeForm = true);

/// <summary>The task metrics of a model on a test set, per category and over all of it.</summary>
public static class TaskEvaluation
{
    /// <summary>
    /// Scores closed-choice records by log-likelihood (accuracy, raw and length-normalised) and, when
    /// <see cref="TaskEvaluationOptions.FreeForm"/>, free-form records by a greedy answer of up to
    /// <see cref="TaskEvaluationOptions.MaxNewTokens"/> tokens stopped at end-of-text (exact match,
    /// ROUGE-L). Rows: every metric over "all", then per category in ordinal order (a record with no
    /// category counts as "(none)").
    /// </summary>
    public static IReadOnlyList<MetricResult> Evaluate(Gpt model, ITokenizer tokenizer, IReadOnlyList<TaskRecord> test, TaskEvaluationOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(test);
        ArgumentNullException.ThrowIfNull(options);
        var scores = new List<(string Category, string Metric, double Score)>();
        var closed = test.Where(r => r.IsClosedChoice).ToArray();
        if (closed.Length > 0)
        {
            var choices = ChoiceScoring.Score(model, tokenizer, closed, options.Batch, options.Context);
            for (var i = 0; i < closed.Length; i++)
            {
                var category = CategoryOf(closed[i]);
                scores.Add((category, TaskMetric.Accuracy, choices[i].Predicted == choices[i].Answer ? 1 : 0));
                scores.Add((category, TaskMetric.AccuracyNormalized, choices[i].PredictedNormalized == choices[i].Answer ? 1 : 0));
            }
        }
        if (options.FreeForm)
        {
            var sampler = new Sampler(0, 0, 0);
            foreach (var record in test.Where(r => !r.IsClosedChoice))
            {
                var answer = Answer(model, tokenizer, record.Instruction, options.MaxNewTokens, sampler);
                scores.Add((CategoryOf(record), TaskMetric.ExactMatch, TextMetrics.ExactMatch(answer, record.Instruction.Response)));
                scores.Add((CategoryOf(record), TaskMetric.RougeL, TextMetrics.RougeL(answer, record.Instruction.Response)));
            }
        }
        return Summarize(scores);
    }

    /// <summary>The greedy answer to an instruction: generated after the prompt until end-of-text or <paramref name="maxNewTokens"/>.</summary>
    public static string Answer(Gpt model, ITokenizer tokenizer, InstructionRecord record, int maxNewTokens, Sampler sampler)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(record);
        var prompt = tokenizer.Encode(InstructionTemplate.FormatPrompt(record.Instruction, record.Context));
        var output = Generation.Generate(model, prompt, maxNewTokens, sampler, tokenizer.EndOfText);
        var answer = output.Length > 0 && output[^1] == tokenizer.EndOfText ? output[..^1] : output;
        return tokenizer.Decode(answer).Trim();
    }

    /// <summary>Means and 95% intervals of per-record scores, per metric over all records, then per category.</summary>
    public static IReadOnlyList<MetricResult> Summarize(IReadOnlyList<(string Category, string Metric, double Score)> scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        var results = new List<MetricResult>();
        var metrics = scores.Select(s => s.Metric).Distinct().ToArray();
        var categories = scores.Select(s => s.Category).Distinct().Order(StringComparer.Ordinal).ToArray();
        foreach (var category in (string[])[TaskMetric.All, .. categories])
        {
            foreach (var metric in metrics)
            {
                var values = scores.Where(s => s.Metric == metric && (category == TaskMetric.All || s.Category == category)).Select(s => s.Score).ToArray();
                if (values.Length == 0) continue;
                var interval = metric == TaskMetric.RougeL ? Interval.OfMean(values) : Interval.Wilson(values.Count(v => v == 1), values.Length);
                results.Add(new MetricResult(category, metric, values.Length, values.Average(), interval.Low, interval.High));
            }
        }
        return results;
    }

    private static string CategoryOf(TaskRecord record) => record.Instruction.Category.Length > 0 ? record.Instruction.Category : "(none)";
}
