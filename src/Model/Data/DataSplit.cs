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
}
