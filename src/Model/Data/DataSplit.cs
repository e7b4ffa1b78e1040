namespace FedLora.Model.Data;

/// <summary>Held-out splits that need no randomness.</summary>
public static class DataSplit
{
    /// <summary>
    /// Splits off the last <paramref name="heldOutFraction"/> of <paramref name="items"/> (at least
    /// one item, at most all but one): for plain text, the tail of the token stream is the
    /// validation text (e.g. the last 10% of Tiny Shakespeare).
    /// </summary>
    public static (T[] Train, T[] HeldOut) Tail<T>(IReadOnlyList<T> items, double heldOutFraction)
    {
        ArgumentNullException.ThrowIfNull(items);
        if (!(heldOutFraction > 0 && heldOutFraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(heldOutFraction), heldOutFraction, "the held-out fraction must be in (0, 1)");
        }
        if (items.Count < 2) throw new ArgumentException($"{items.Count} item(s) cannot be split in two", nameof(items));
        var heldOut = Math.Clamp((int)Math.Round(items.Count * heldOutFraction), 1, items.Count - 1);
        var train = items.Take(items.Count - heldOut).ToArray();
        return (train, items.Skip(items.Count - heldOut).ToArray());
    }

    /// <summary>
    /// Holds out <paramref name="heldOutFraction"/> of <paramref name="items"/> (at least one item, at
    /// most all but one) drawn without replacement by <c>new Random(seed)</c>; both parts keep the
    /// items' order. For records, whose files are often sorted by task, where a tail would hold one task.
    /// </summary>
    public static (T[] Train, T[] HeldOut) Sample<T>(IReadOnlyList<T> items, double heldOutFraction, int seed)
    {
        ArgumentNullException.ThrowIfNull(items);
        if (!(heldOutFraction > 0 && heldOutFraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(heldOutFraction), heldOutFraction, "the held-out fraction must be in (0, 1)");
        }
        if (items.Count < 2) throw new ArgumentException($"{items.Count} item(s) cannot be split in two", nameof(items));
        var count = Math.Clamp((int)Math.Round(items.Count * heldOutFraction), 1, items.Count - 1);
        var order = Enumerable.Range(0, items.Count).ToArray();
        new Random(seed).Shuffle(order);
        var heldOut = new bool[items.Count];
        foreach (var index in order.AsSpan(0, count)) heldOut[index] = true;
        return (items.Where((_, i) => !heldOut[i]).ToArray(), items.Where((_, i) => heldOut[i]).ToArray());
    }
}
