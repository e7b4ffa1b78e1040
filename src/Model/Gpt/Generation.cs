namespace FedLora.Model;

/// <summary>Autoregressive sampling from a <see cref="Gpt"/>.</summary>
public static class Generation
{
    /// <summary>
    /// Extends <paramref name="prompt"/> by up to <paramref name="maxNewTokens"/> tokens drawn by
    /// <paramref name="sampler"/>, stopping early after <paramref name="stopToken"/> when given. The model
    /// sees at most its last <see cref="Gpt.MaxTime"/> tokens. Returns only the new tokens.
    /// </summary>
    public static int[] Generate(Gpt model, ReadOnlySpan<int> prompt, int maxNewTokens, Sampler sampler, int? stopToken = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        if (prompt.IsEmpty) throw new ArgumentException("generation needs a prompt of at least one token", nameof(prompt));
        var vocab = model.Config.VocabSize;
        var sequence = new List<int>(prompt.Length + maxNewTokens);
        sequence.AddRange(prompt);
        var logits = new float[vocab];
        var produced = new List<int>(maxNewTokens);
        for (var step = 0; step < maxNewTokens; step++)
        {
            var time = Math.Min(sequence.Count, model.MaxTime);
            var window = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(sequence)[^time..];
            model.Forward(1, time, window);
            model.CopyLogits(time - 1, logits);
            var next = sampler.Next(logits);
            sequence.Add(next);
            produced.Add(next);
            if (next == stopToken) break;
        }
        return [.. produced];
    }
}
