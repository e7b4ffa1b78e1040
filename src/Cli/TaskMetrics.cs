using System.Globalization;
using FedLora.Model;
using FedLora.Model.Evaluation;
using FedLora.Model.Tokenization;
using Spectre.Console;

namespace FedLora.Cli;

/// <summary>When the task metrics are computed: every <paramref name="Every"/> rounds or steps, and at the start and the end; never when 0.</summary>
/// <param name="Every">The period; 0 turns the task metrics off.</param>
/// <param name="MaxNewTokens">The longest greedy answer to a free-form record.</param>
internal sealed record TaskEvaluationSchedule(int Every, int MaxNewTokens)
{
    public bool Enabled => Every > 0;

    /// <summary>Whether the metrics are due after <paramref name="completed"/> of <paramref name="total"/> rounds or steps.</summary>
    public bool IsDue(int completed, int total) => Enabled && (completed == 0 || completed == total || completed % Every == 0);
}

/// <summary>The task metrics of the model after <paramref name="Round"/> rounds (or steps; 0 is the start).</summary>
internal sealed record TaskRound(int Round, IReadOnlyList<MetricResult> Results)
{
    /// <summary>The metric's value over <paramref name="category"/>, or NaN when it was not measured.</summary>
    public double Value(string metric, string category = TaskMetric.All) =>
        Results.FirstOrDefault(r => r.Metric == metric && r.Category == category)?.Value ?? double.NaN;
}

/// <summary>The task metrics as the commands compute and print them.</summary>
internal static class TaskMetrics
{
    /// <summary>The metric a run is judged by: accuracy when the test set has closed-choice records, else ROUGE-L.</summary>
    public static string Headline(InstructionData data) => data.HasClosedChoice ? TaskMetric.Accuracy : TaskMetric.RougeL;

    /// <summary>Scores the model as it stands (adapters attached or not) on the data's test records.</summary>
    public static TaskRound Measure(int round, Gpt model, ITokenizer tokenizer, InstructionData data, int batch, int context, TaskEvaluationSchedule schedule) =>
        new(round, TaskEvaluation.Evaluate(model, tokenizer, data.Test, new TaskEvaluationOptions(batch, context, schedule.MaxNewTokens)));

    /// <summary>A value with its 95% interval: "0.425 [0.32, 0.54]".</summary>
    public static string WithInterval(MetricResult result) =>
        string.Create(CultureInfo.InvariantCulture, $"{result.Value:0.000} [{CommonOptions.Number(result.Low, "0.00")}, {CommonOptions.Number(result.High, "0.00")}]");

    /// <summary>Every metric per category: the rows of <c>evaluate</c>'s table.</summary>
    public static Table Table(IReadOnlyList<MetricResult> results)
    {
        var table = new Table().AddColumns("category", "metric", "n", "value", "95% interval");
        foreach (var result in results)
        {
            table.AddRow(Markup.Escape(result.Category), result.Metric, result.Count.ToString(CultureInfo.InvariantCulture), CommonOptions.Number(result.Value, "0.000"),
                Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"[{CommonOptions.Number(result.Low, "0.000")}, {CommonOptions.Number(result.High, "0.000")}]")));
        }
        return table;
    }
}
