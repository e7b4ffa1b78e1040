using System.Globalization;
using System.Text;

namespace FedLora.Model.Evaluation;

/// <summary>
/// Scores of a free-form answer against its reference, after SQuAD's normalisation: lower case,
/// punctuation removed, the articles a, an, the removed, white space collapsed.
/// </summary>
public static class TextMetrics
{
    // The ASCII characters of Python's string.punctuation that Unicode files as symbols, not punctuation.
    private const string AsciiSymbols = "$+<=>^`|~";

    /// <summary>
    /// The normalised text: lower-cased (invariant culture), every Unicode punctuation character and
    /// every ASCII character of Python's string.punctuation dropped, the words "a", "an", "the" dropped, words joined by single spaces.
    /// </summary>
    public static string Normalize(string text) => string.Join(' ', Words(text));

    /// <summary>The words of the normalised text: what exact match compares and ROUGE-L aligns.</summary>
    public static IReadOnlyList<string> Words(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var kept = new StringBuilder(text.Length);
        foreach (var rune in text.ToLowerInvariant().EnumerateRunes())
        {
            if (Rune.GetUnicodeCategory(rune) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation
                or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation
                or UnicodeCategory.OtherPunctuation || (rune.IsAscii && AsciiSymbols.Contains((char)rune.Value, StringComparison.Ordinal)))
            {
                continue;
            }
            kept.Append(Rune.IsWhiteSpace(rune) ? " " : rune.ToString());
        }
        return kept.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(w => w is not ("a" or "an" or "the")).ToArray();
    }

    /// <summary>1 when the normalised prediction equals the normalised reference, else 0 (two empty answers match).</summary>
    public static double ExactMatch(string prediction, string reference) =>
        string.Equals(Normalize(prediction), Normalize(reference), StringComparison.Ordinal) ? 1 : 0;

    /// <summary>
    /// ROUGE-L F1 over normalised words: with l the length of the longest common subsequence of the
    /// prediction's m words and the reference's n words, P = l/m, R = l/n and F = 2PR/(P+R) (0 when
    /// l = 0). Two empty answers score 1; one empty answer scores 0.
    /// </summary>
    public static double RougeL(string prediction, string reference)
    {
        var (p, r) = (Words(prediction), Words(reference));
        if (p.Count == 0 || r.Count == 0) return p.Count == r.Count ? 1 : 0;
        var l = LongestCommonSubsequence(p, r);
        if (l == 0) return 0;
        var (precision, recall) = ((double)l / p.Count, (double)l / r.Count);
        return 2 * precision * recall / (precision + recall);
    }

    /// <summary>The length of the longest common subsequence of two word lists (the classic O(mn) table, one row kept).</summary>
    public static int LongestCommonSubsequence(IReadOnlyList<string> a, IReadOnlyList<string> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var row = new int[b.Count + 1];
        for (var i = 1; i <= a.Count; i++)
        {
            var diagonal = 0;
            for (var j = 1; j <= b.Count; j++)
            {
                var above = row[j];
                row[j] = string.Equals(a[i - 1], b[j - 1], StringComparison.Ordinal) ? diagonal + 1 : Math.Max(row[j], row[j - 1]);
                diagonal = above;
            }
        }
        return row[b.Count];
    }

    /// <summary>The length of a choice as lm-evaluation-harness counts it for acc_norm: Unicode code points (Python's len).</summary>
    public static int Characters(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var count = 0;
        foreach (var _ in text.EnumerateRunes()) count++;
        return count;
    }
}

/// <summary>A 95% confidence interval.</summary>
/// <param name="Low">Lower bound.</param>
/// <param name="High">Upper bound.</param>
public readonly record struct Interval(double Low, double High)
{
    /// <summary>The two-sided 95% normal quantile.</summary>
    public const double Z95 = 1.959963984540054;

    /// <summary>
    /// The Wilson score interval of a proportion k/n: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n).
    /// Unlike p ± z sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at p = 0 or 1. NaN bounds when n = 0.
    /// </summary>
    public static Interval Wilson(int successes, int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(successes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(successes, n);
        if (n == 0) return new Interval(double.NaN, double.NaN);
        var p = (double)successes / n;
        var z2 = Z95 * Z95;
        var center = (p + z2 / (2 * n)) / (1 + z2 / n);
        var half = Z95 / (1 + z2 / n) * Math.Sqrt(p * (1 - p) / n + z2 / (4.0 * n * n));
        return new Interval(Math.Max(0, center - half), Math.Min(1, center + half));
    }

    /// <summary>
    /// The normal interval of the mean of scores in [0, 1]: mean ± z s / sqrt(n), s the sample standard
    /// deviation, clipped to [0, 1]. NaN bounds when n &lt; 2.
    /// </summary>
    public static Interval OfMean(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count < 2) return new Interval(double.NaN, double.NaN);
        var mean = values.Average();
        var variance = values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1);
        var half = Z95 * Math.Sqrt(variance / values.Count);
        return new Interval(Math.Max(0, mean - half), Math.Min(1, mean + half));
    }
}
