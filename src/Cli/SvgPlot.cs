using System.Globalization;
using System.Net;
using System.Text;

namespace FedLora.Cli;

/// <summary>A line chart as a standalone SVG file: one series per method, a legend, labelled axes.</summary>
internal static class SvgPlot
{
    private static readonly string[] Colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

    public static string Lines(string title, string xLabel, string yLabel, IReadOnlyList<(string Name, IReadOnlyList<(double X, double Y)> Points)> series)
    {
        const double Width = 760, Height = 460, Left = 70, Right = 190, Top = 40, Bottom = 55;
        var points = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.Y)).ToArray();
        var (xMin, xMax) = (points.Min(p => p.X), points.Max(p => p.X));
        var (yMin, yMax) = (points.Min(p => p.Y), points.Max(p => p.Y));
        if (xMax == xMin) xMax = xMin + 1;
        var pad = Math.Max((yMax - yMin) * 0.05, 1e-3);
        (yMin, yMax) = (yMin - pad, yMax + pad);
        double X(double x) => Left + (x - xMin) / (xMax - xMin) * (Width - Left - Right);
        double Y(double y) => Top + (yMax - y) / (yMax - yMin) * (Height - Top - Bottom);
        static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

        var svg = new StringBuilder();
        svg.AppendLine(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" font-family=\"sans-serif\" font-size=\"12\">");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<rect width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{F(Width / 2)}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{WebUtility.HtmlEncode(title)}</text>");
        var yStep = NiceStep((yMax - yMin) / 5);
        var yFormat = "0." + new string('0', Math.Max(0, (int)-Math.Floor(Math.Log10(yStep))));
        foreach (var y in Ticks(yMin, yMax, yStep))
        {
            svg.AppendLine(CultureInfo.InvariantCulture, $"<line x1=\"{F(Left)}\" x2=\"{F(Width - Right)}\" y1=\"{F(Y(y))}\" y2=\"{F(Y(y))}\" stroke=\"#ddd\"/>");
            svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{F(Left - 6)}\" y=\"{F(Y(y) + 4)}\" text-anchor=\"end\">{y.ToString(yFormat, CultureInfo.InvariantCulture)}</text>");
        }
        foreach (var x in Ticks(xMin, xMax, Math.Max(1, NiceStep((xMax - xMin) / 10))))
        {
            svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{F(X(x))}\" y=\"{F(Height - Bottom + 18)}\" text-anchor=\"middle\">{F(x)}</text>");
        }
        svg.AppendLine(CultureInfo.InvariantCulture, $"<rect x=\"{F(Left)}\" y=\"{F(Top)}\" width=\"{F(Width - Left - Right)}\" height=\"{F(Height - Top - Bottom)}\" fill=\"none\" stroke=\"#333\"/>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{F((Left + Width - Right) / 2)}\" y=\"{F(Height - 12)}\" text-anchor=\"middle\">{WebUtility.HtmlEncode(xLabel)}</text>");
        svg.AppendLine(CultureInfo.InvariantCulture, $"<text transform=\"translate(16,{F((Top + Height - Bottom) / 2)}) rotate(-90)\" text-anchor=\"middle\">{WebUtility.HtmlEncode(yLabel)}</text>");
        for (var s = 0; s < series.Count; s++)
        {
            var color = Colors[s % Colors.Length];
            var path = string.Join(" ", series[s].Points.Where(p => double.IsFinite(p.Y)).Select(p => $"{F(X(p.X))},{F(Y(p.Y))}"));
            svg.AppendLine(CultureInfo.InvariantCulture, $"<polyline points=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>");
            var legendY = Top + 10 + s * 20;
            svg.AppendLine(CultureInfo.InvariantCulture, $"<line x1=\"{F(Width - Right + 15)}\" x2=\"{F(Width - Right + 40)}\" y1=\"{F(legendY)}\" y2=\"{F(legendY)}\" stroke=\"{color}\" stroke-width=\"3\"/>");
            svg.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{F(Width - Right + 46)}\" y=\"{F(legendY + 4)}\">{WebUtility.HtmlEncode(series[s].Name)}</text>");
        }
        svg.AppendLine("</svg>");
        return svg.ToString();
    }

    /// <summary>The smallest of 1, 2 or 5 times a power of ten that is at least <paramref name="rough"/>: a step people read at a glance.</summary>
    public static double NiceStep(double rough)
    {
        if (!(rough > 0) || !double.IsFinite(rough)) return 1;
        var power = Math.Pow(10, Math.Floor(Math.Log10(rough)));
        foreach (var multiple in (double[])[1, 2, 5, 10])
        {
            if (multiple * power >= rough * (1 - 1e-9)) return multiple * power;
        }
        return 10 * power;
    }

    /// <summary>The multiples of <paramref name="step"/> in [min, max], computed from integers so that no rounding drift creeps in.</summary>
    public static IEnumerable<double> Ticks(double min, double max, double step)
    {
        var first = (long)Math.Ceiling(min / step - 1e-9);
        var last = (long)Math.Floor(max / step + 1e-9);
        for (var i = first; i <= last; i++) yield return i * step;
    }
}
