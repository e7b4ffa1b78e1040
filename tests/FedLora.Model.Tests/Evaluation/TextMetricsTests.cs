using FedLora.Model.Evaluation;

namespace FedLora.Model.Tests.Evaluation;

public class TextMetricsTests
{
    [Theory]
    [InlineData("The Cat sat.", "cat  sat", 1)]
    [InlineData("An apple, a pear!", "apple pear", 1)]
    [InlineData("$5 + tax", "5 tax", 1)]
    [InlineData("cat sat", "cat sat down", 0)]
    [InlineData("", "", 1)]
    [InlineData("", "something", 0)]
    [InlineData("the", "", 1)]
    [InlineData("Ça VA «bien»", "ça va bien", 1)]
    [InlineData("naïve café", "naive cafe", 0)]
    public void ExactMatch_HandComputedCases(string prediction, string reference, double expected) =>
        Assert.Equal(expected, TextMetrics.ExactMatch(prediction, reference));

    [Theory]
    // LCS("a b c d", "a c d e") over words {b,c,d,e}... with articles: "a" is dropped, so words are "b c d" and "c d e": LCS 2, P = R = 2/3.
    [InlineData("a b c d", "a c d e", 2.0 / 3)]
    // 4 prediction words, 2 reference words, LCS 2: P = 1/2, R = 1, F = 2/3.
    [InlineData("police killed the gunman today", "police gunman", 2 * 0.5 * 1 / 1.5)]
    [InlineData("x y z", "p q", 0)]
    [InlineData("", "", 1)]
    [InlineData("", "word", 0)]
    [InlineData("word", "", 0)]
    // Order matters: LCS of "one two three" and "three two one" is 1.
    [InlineData("one two three", "three two one", 1.0 / 3)]
    [InlineData("東京 は 大きい", "東京 は 大きい", 1)]
    public void RougeL_HandComputedCases(string prediction, string reference, double expected) =>
        Assert.Equal(expected, TextMetrics.RougeL(prediction, reference), 12);

    [Fact]
    public void LongestCommonSubsequence_ClassicExample() =>
        // ABCBDAB vs BDCABA: LCS length 4 (e.g. BCBA).
        Assert.Equal(4, TextMetrics.LongestCommonSubsequence(["A", "B", "C", "B", "D", "A", "B"], ["B", "D", "C", "A", "B", "A"]));

    [Theory]
    [InlineData("abc", 3)]
    [InlineData("", 0)]
    [InlineData("é", 1)]
    [InlineData("😀x", 2)]
    public void Characters_CountsCodePoints(string text, int expected) => Assert.Equal(expected, TextMetrics.Characters(text));

    [Fact]
    public void Wilson_MatchesPublishedValues()
    {
        // 8/10 and 0/10: the Wilson 95% intervals, computed independently with Python from the formula.
        var interval = Interval.Wilson(8, 10);
        Assert.Equal(0.490162, interval.Low, 5);
        Assert.Equal(0.943318, interval.High, 5);
        var zero = Interval.Wilson(0, 10);
        Assert.Equal(0, zero.Low);
        Assert.Equal(0.277532, zero.High, 5);
        Assert.True(double.IsNaN(Interval.Wilson(0, 0).Low));
    }

    [Fact]
    public void OfMean_IsMeanPlusMinusZTimesStandardError()
    {
        // mean 0.5, sample sd sqrt(((0.3)^2*2 + (0.1)^2*2)/3) = sqrt(0.2/3).
        var interval = Interval.OfMean([0.2, 0.4, 0.6, 0.8]);
        var half = Interval.Z95 * Math.Sqrt(0.2 / 3 / 4);
        Assert.Equal(0.5 - half, interval.Low, 12);
        Assert.Equal(0.5 + half, interval.High, 12);
        Assert.True(double.IsNaN(Interval.OfMean([0.5]).High));
    }

    [Fact]
    public void Summarize_AllThenCategories_WithMeans()
    {
        var rows = TaskEvaluation.Summarize([("b", TaskMetric.Accuracy, 1), ("a", TaskMetric.Accuracy, 0), ("b", TaskMetric.Accuracy, 1)]);
        Assert.Equal(["all", "a", "b"], rows.Select(r => r.Category));
        Assert.Equal(2.0 / 3, rows[0].Value, 12);
        Assert.Equal(3, rows[0].Count);
        Assert.Equal(0, rows[1].Value);
        Assert.Equal(1, rows[2].Value);
        Assert.Equal(Interval.Wilson(2, 3), new Interval(rows[0].Low, rows[0].High));
    }
}
