using FedLora.Kernels.Cpu;
using FedLora.Model.Data;
using FedLora.Model.Evaluation;
using FedLora.Model.Tokenization;

namespace FedLora.Model.Tests.Evaluation;

public sealed class ChoiceScoringTests : IDisposable
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 96, Layers: 2, Channels: 16, Heads: 2);
    private readonly CpuBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    private static TaskRecord Choice(string question, int answer, params string[] choices) =>
        new(new InstructionRecord(question, "", choices[answer], "test"), choices, answer);

    /// <summary>log p(choice | prompt) the slow way: one unbatched forward of the whole sequence, log-softmax in double.</summary>
    private double ReferenceLogLikelihood(Gpt model, string question, string choice)
    {
        var prompt = ByteTokenizer.Instance.Encode(InstructionTemplate.FormatPrompt(question, ""));
        int[] sequence = [.. prompt, .. ByteTokenizer.Instance.Encode(choice)];
        var time = sequence.Length - 1;
        model.Forward(1, time, sequence.AsSpan(0, time));
        var logits = _backend.ToArray(model.Logits);
        var v = Config.VocabSize;
        double sum = 0;
        for (var t = prompt.Length - 1; t < time; t++)
        {
            var row = logits.AsSpan(t * v, v);
            var max = double.NegativeInfinity;
            foreach (var z in row) max = Math.Max(max, z);
            double total = 0;
            foreach (var z in row) total += Math.Exp(z - max);
            sum += row[sequence[t + 1]] - max - Math.Log(total);
        }
        return sum;
    }

    [Fact]
    public void Score_MatchesUnbatchedLogSoftmax_ForEveryChoice()
    {
        using var model = new Gpt(_backend, Config, maxBatch: 3, maxTime: 96);
        model.InitializeParameters(new Random(7));
        TaskRecord[] records = [Choice("Sky?", 1, "green", "blue", "red"), Choice("2+2?", 0, "4", "five"), Choice("Ünïcode?", 1, "ja", "nein", "peut-être")];
        var scores = ChoiceScoring.Score(model, ByteTokenizer.Instance, records, batch: 3, context: 96);
        for (var r = 0; r < records.Length; r++)
        {
            for (var c = 0; c < records[r].Choices!.Count; c++)
            {
                var expected = ReferenceLogLikelihood(model, records[r].Instruction.Instruction, records[r].Choices![c]);
                Assert.Equal(expected, scores[r].LogLikelihoods[c], 3);
            }
            Assert.Equal(records[r].Choices!.Select(TextMetrics.Characters), scores[r].Characters);
        }
    }

    [Fact]
    public void Score_SequenceLongerThanContext_KeepsItsLastTokens()
    {
        using var model = new Gpt(_backend, Config, maxBatch: 2, maxTime: 96);
        model.InitializeParameters(new Random(8));
        var question = new string('q', 200);
        var record = Choice(question, 0, "short", "a longer choice");
        var scores = ChoiceScoring.Score(model, ByteTokenizer.Instance, [record], batch: 2, context: 40);
        // The reference: the last 41 tokens, whose targets from the prompt's end are the choice's tokens.
        var prompt = ByteTokenizer.Instance.Encode(InstructionTemplate.FormatPrompt(question, ""));
        for (var c = 0; c < 2; c++)
        {
            int[] sequence = [.. prompt, .. ByteTokenizer.Instance.Encode(record.Choices![c])];
            var window = sequence[^41..];
            model.Forward(1, 40, window.AsSpan(0, 40), window.AsSpan(1, 40).ToArray().Select((t, i) => i >= 40 - record.Choices[c].Length ? t : -1).ToArray());
            var losses = new float[40];
            model.CopyPositionLosses(losses);
            Assert.Equal(-losses.Sum(l => (double)l), scores[0].LogLikelihoods[c], 3);
        }
    }

    [Fact]
    public void Predicted_TieGoesToTheFirstChoice()
    {
        var tie = new ChoiceScores([-2.0, -1.0, -1.0], [1, 1, 1], Answer: 2);
        Assert.Equal(1, tie.Predicted);
        // Per character: -6/6 = -1 beats -1.5/1 and -4/2, while raw -1.5 is the highest.
        var normalized = new ChoiceScores([-1.5, -4.0, -6.0], [1, 2, 6], Answer: 2);
        Assert.Equal(0, normalized.Predicted);
        Assert.Equal(2, normalized.PredictedNormalized);
    }

    [Fact]
    public void Evaluate_AccuracyIsTheShareOfRecordsWhoseAnswerScoresHighest()
    {
        using var model = new Gpt(_backend, Config, maxBatch: 4, maxTime: 96);
        model.InitializeParameters(new Random(9));
        TaskRecord[] records = [Choice("a?", 0, "x", "yy"), Choice("b?", 1, "x", "yy"), Choice("c?", 1, "pp", "q", "rrr")];
        var scores = ChoiceScoring.Score(model, ByteTokenizer.Instance, records, 4, 96);
        var expected = scores.Count(s => s.Predicted == s.Answer) / 3.0;
        var results = TaskEvaluation.Evaluate(model, ByteTokenizer.Instance, records, new TaskEvaluationOptions(4, 96));
        var all = Assert.Single(results, r => r.Category == TaskMetric.All && r.Metric == TaskMetric.Accuracy);
        Assert.Equal(expected, all.Value, 12);
        Assert.Equal(3, all.Count);
        Assert.Contains(results, r => r.Metric == TaskMetric.AccuracyNormalized);
    }

    [Fact]
    public void CopyPositionLosses_WithoutTargets_Throws()
    {
        using var model = new Gpt(_backend, Config, 1, 8);
        model.Forward(1, 4, [1, 2, 3, 4]);
        Assert.Throws<InvalidOperationException>(() => model.CopyPositionLosses(new float[4]));
    }
}
