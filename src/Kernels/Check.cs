using System.Globalization;
using System.Runtime.CompilerServices;

namespace FedLora.Kernels;

/// <summary>
/// Argument validation for the public op entries: every failure is an <see cref="ArgumentException"/>
/// that names the operand, the shape the op expected and what it was given.
/// </summary>
internal static class Check
{
    public static void Dims(params ReadOnlySpan<(string Name, int Value)> dims)
    {
        foreach (var (name, value) in dims)
        {
            if (value < 0) throw new ArgumentOutOfRangeException(name, value, $"dimension {name} must be >= 0, got {value}");
        }
    }

    public static void Heads(int c, int heads)
    {
        if (heads == 0 ? c != 0 : c % heads != 0)
        {
            throw new ArgumentException($"channels C = {c} must be a multiple of heads NH = {heads}", nameof(heads));
        }
    }

    public static void Own(Backend backend, BufferView view, string operand)
    {
        if (view.Buffer is null) throw new ArgumentException($"operand '{operand}' is an empty view (no buffer)", operand);
        if (!ReferenceEquals(view.Buffer.Backend, backend))
        {
            throw new ArgumentException(
                $"operand '{operand}' lives on backend '{view.Buffer.Backend.Name}', not on '{backend.Name}'", operand);
        }
        if (view.Buffer.IsDisposed) throw new ObjectDisposedException(operand, $"operand '{operand}' is a view of a disposed buffer");
        if (view.Offset < 0 || view.Length < 0 || (long)view.Offset + view.Length > view.Buffer.Length)
        {
            throw new ArgumentException(
                $"operand '{operand}' is the view [{view.Offset}, {(long)view.Offset + view.Length}) of a buffer of {view.Buffer.Length} floats",
                operand);
        }
    }

    /// <summary>Checks that a view holds exactly the product of <paramref name="shape"/>, named by <paramref name="letters"/> such as "(O,C)".</summary>
    public static void View(Backend backend, BufferView view, string operand, string letters, params ReadOnlySpan<int> shape)
    {
        Own(backend, view, operand);
        var expected = Product(shape);
        if (view.Length != expected)
        {
            throw new ArgumentException(
                $"operand '{operand}' must be {letters} = {Format(shape)} = {expected} floats, but its view holds {view.Length}", operand);
        }
    }

    public static void View(Backend backend, BufferView view, string operand, int expected,
        [InterpolatedStringHandlerArgument(nameof(view), nameof(expected))] ref FailureText shapeText)
    {
        Own(backend, view, operand);
        if (view.Length != expected)
        {
            throw new ArgumentException(
                $"operand '{operand}' must hold {shapeText.ToStringAndClear()} floats, but its view holds {view.Length}", operand);
        }
    }

    /// <summary>
    /// Checks element <paramref name="index"/> of a list operand (sources[k]); the element's name is
    /// built only when the check fails.
    /// </summary>
    public static void ViewAt(Backend backend, BufferView view, string operand, int index, int expected,
        [InterpolatedStringHandlerArgument(nameof(view), nameof(expected))] ref FailureText shapeText)
    {
        if (Owns(backend, view) && view.Length == expected) return;
        var name = $"{operand}[{index}]";
        Own(backend, view, name);
        throw new ArgumentException($"operand '{name}' must hold {shapeText.ToStringAndClear()} floats, but its view holds {view.Length}", name);
    }

    private static bool Owns(Backend backend, BufferView view) =>
        view.Buffer is { } buffer && ReferenceEquals(buffer.Backend, backend) && !buffer.IsDisposed
        && view.Offset >= 0 && view.Length >= 0 && (long)view.Offset + view.Length <= buffer.Length;

    public static void View(Backend backend, BufferView view, string operand, int expected, string shapeText)
    {
        Own(backend, view, operand);
        if (view.Length != expected)
        {
            throw new ArgumentException(
                $"operand '{operand}' must hold {shapeText} floats, but its view holds {view.Length}", operand);
        }
    }

    public static void Optional(Backend backend, BufferView? view, string operand, string letters, params ReadOnlySpan<int> shape)
    {
        if (view is { } v) View(backend, v, operand, letters, shape);
    }

    /// <summary>A table with at least <paramref name="rows"/> rows of <paramref name="columns"/> floats.</summary>
    public static void Rows(Backend backend, BufferView view, string operand, int rows, int columns)
    {
        Own(backend, view, operand);
        if (columns == 0 ? view.Length != 0 : view.Length % columns != 0 || view.Length / columns < rows)
        {
            throw new ArgumentException(
                $"operand '{operand}' must be (maxT,{columns}) with maxT >= {rows}, but its view holds {view.Length} floats", operand);
        }
    }

    public static void Length(string operand, int actual, int expected,
        [InterpolatedStringHandlerArgument(nameof(actual), nameof(expected))] ref FailureText shapeText)
    {
        if (actual != expected)
        {
            throw new ArgumentException($"operand '{operand}' must have length {shapeText.ToStringAndClear()}, but has {actual}", operand);
        }
    }

    public static void Length(string operand, int actual, int expected, string shapeText)
    {
        if (actual != expected)
        {
            throw new ArgumentException($"operand '{operand}' must have length {shapeText}, but has {actual}", operand);
        }
    }

    /// <summary>Checks a rank index set against rank r and returns k, the number of active ranks.</summary>
    public static int RankIndices(int[]? indices, int rank, [CallerArgumentExpression(nameof(indices))] string operand = "rankIndices")
    {
        if (indices is null) return rank;
        if (indices.Length > rank)
        {
            throw new ArgumentException($"operand '{operand}' has {indices.Length} indices but the adapter's rank r is {rank}", operand);
        }
        Span<bool> seen = rank <= 1024 ? stackalloc bool[rank] : new bool[rank];
        for (var i = 0; i < indices.Length; i++)
        {
            var index = indices[i];
            if ((uint)index >= (uint)rank)
            {
                throw new ArgumentException(
                    $"operand '{operand}'[{i}] = {index} is outside [0, {rank}) for an adapter of rank r = {rank}", operand);
            }
            if (seen[index]) throw new ArgumentException($"operand '{operand}' holds rank index {index} twice (at position {i})", operand);
            seen[index] = true;
        }
        return indices.Length;
    }

    public static void Tokens(string operand, ReadOnlySpan<int> tokens, int expected, int vocab, bool allowIgnored)
    {
        if (tokens.Length != expected)
        {
            throw new ArgumentException($"operand '{operand}' must have length (B*T) = {expected}, but has {tokens.Length}", operand);
        }
        for (var i = 0; i < tokens.Length; i++)
        {
            var token = tokens[i];
            if ((uint)token >= (uint)vocab && !(allowIgnored && token == -1))
            {
                var allowed = allowIgnored ? $"[0, {vocab}) or -1 (ignored)" : $"[0, {vocab})";
                throw new ArgumentException($"operand '{operand}'[{i}] = {token} is outside {allowed}", operand);
            }
        }
    }

    private static int Product(ReadOnlySpan<int> shape)
    {
        long product = 1;
        foreach (var d in shape) product *= d;
        if (product > int.MaxValue) throw new ArgumentException($"shape {Format(shape)} holds more than {int.MaxValue} floats");
        return (int)product;
    }

    private static string Format(ReadOnlySpan<int> shape)
    {
        var parts = new string[shape.Length];
        for (var i = 0; i < shape.Length; i++) parts[i] = shape[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
        return "(" + string.Join(",", parts) + ")";
    }
}

/// <summary>
/// The shape text of a failure message, formatted only when the sizes it is built for differ (the
/// pattern of Debug.Assert's message handler), so that a valid call allocates nothing.
/// </summary>
[InterpolatedStringHandler]
internal ref struct FailureText
{
    private readonly bool _failed;
    private DefaultInterpolatedStringHandler _text;

    public FailureText(int literalLength, int formattedCount, int actual, int expected, out bool shouldAppend)
    {
        _failed = shouldAppend = actual != expected;
        _text = _failed ? new DefaultInterpolatedStringHandler(literalLength, formattedCount, CultureInfo.InvariantCulture) : default;
    }

    /// <summary>A view's text: formatted only when the view's length is not <paramref name="expected"/>.</summary>
    public FailureText(int literalLength, int formattedCount, BufferView view, int expected, out bool shouldAppend)
        : this(literalLength, formattedCount, view.Length, expected, out shouldAppend)
    {
    }

    public void AppendLiteral(string value) => _text.AppendLiteral(value);

    public void AppendFormatted<T>(T value) => _text.AppendFormatted(value);

    public string ToStringAndClear() => _failed ? _text.ToStringAndClear() : string.Empty;
}
