namespace FedLora.Federation;

/// <summary>
/// Bounds what one client can do to the global state: each update's change from the start it was sent
/// is clipped in L2 norm, and an aggregate is checked (finite, not exploding) before it is committed.
/// Pure: arrays in, arrays out.
/// </summary>
public static class UpdateGuard
{
    /// <summary>How far past the old state (plus one clip) the aggregate's norm may grow before it counts as exploding.</summary>
    public const double ExplosionFactor = 100;

    /// <summary>How many values <paramref name="assignment"/>'s client trains (B, and A unless frozen), and their start's L2 norm.</summary>
    public static (long Count, double StartNorm) TrainedValues(ClientAssignment assignment)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        long count = 0;
        double squares = 0;
        var both = assignment.Trainable == TrainableFactors.Both;
        foreach (var start in assignment.Start)
        {
            count += start.B.Length + (both ? start.A.Length : 0);
            squares += SumOfSquares(start.B) + (both ? SumOfSquares(start.A) : 0);
        }
        return (count, Math.Sqrt(squares));
    }

    /// <summary>
    /// The L2 norm of <paramref name="update"/>'s change from <paramref name="assignment"/>'s start (in double);
    /// under HetLoRA's pruning the uploaded rank r' is compared with the start's first r' ranks.
    /// </summary>
    public static double ChangeNorm(ClientAssignment assignment, ClientUpdate update)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        ArgumentNullException.ThrowIfNull(update);
        double squares = 0;
        ForEachPair(assignment, update, (value, start) => squares += ((double)value - start) * ((double)value - start));
        return Math.Sqrt(squares);
    }

    /// <summary><paramref name="update"/> with its change scaled to norm <paramref name="clip"/> when <paramref name="norm"/> exceeds it, else itself.</summary>
    public static ClientUpdate Clip(ClientAssignment assignment, ClientUpdate update, double norm, double clip)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        ArgumentNullException.ThrowIfNull(update);
        if (!(norm > clip)) return update;
        var factor = clip / norm;
        var modules = new ModuleUpdate[update.Modules.Count];
        for (var m = 0; m < modules.Length; m++)
        {
            var (module, start) = (update.Modules[m], assignment.Start[m]);
            var a = module.A is null ? null : Scaled(module.A, start.A, start.Rank, update.Rank, byRows: true, factor);
            var b = Scaled(module.B, start.B, start.Rank, update.Rank, byRows: false, factor);
            modules[m] = module with { A = a, B = b };
        }
        return new ClientUpdate(update.ClientId, update.Round, update.Rank, modules);
    }

    /// <summary>
    /// Null when <paramref name="next"/> (and the base update, if any) is finite and its norm at most
    /// <see cref="ExplosionFactor"/> times the previous state's norm plus <paramref name="clip"/>; else why not.
    /// </summary>
    public static string? CheckAggregate(GlobalState previous, GlobalState next, IReadOnlyList<StackedUpdate>? baseUpdate, double clip)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(next);
        double squares = 0;
        foreach (var adapter in next.Adapters)
        {
            if (FirstNonFinite(adapter.A) is { } a) return $"module {adapter.Module.Name}'s A holds {adapter.A[a]} at element {a}";
            if (FirstNonFinite(adapter.B) is { } b) return $"module {adapter.Module.Name}'s B holds {adapter.B[b]} at element {b}";
            squares += SumOfSquares(adapter.A) + SumOfSquares(adapter.B);
        }
        foreach (var update in baseUpdate ?? [])
        {
            if (FirstNonFinite(update.A) is { } a) return $"the base update of module {update.Module.Name} holds {update.A[a]} in A at element {a}";
            if (FirstNonFinite(update.B) is { } b) return $"the base update of module {update.Module.Name} holds {update.B[b]} in B at element {b}";
            if (FirstNonFinite(update.RowWeights) is { } w) return $"the base update of module {update.Module.Name} holds row weight {update.RowWeights[w]}";
            squares += SumOfSquares(update.A) + SumOfSquares(update.B);
        }
        var before = Math.Sqrt(previous.Adapters.Sum(adapter => SumOfSquares(adapter.A) + SumOfSquares(adapter.B)));
        var limit = ExplosionFactor * (before + (double.IsFinite(clip) ? clip : before + 1));
        var norm = Math.Sqrt(squares);
        return double.IsFinite(norm) && norm <= limit ? null : $"its norm {norm:G4} exceeds {limit:G4} ({ExplosionFactor} x (the previous state's norm {before:G4} + the clip))";
    }

    private static float[] Scaled(float[] values, float[] start, int startRank, int rank, bool byRows, double factor)
    {
        var result = new float[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            var s = start[StartIndex(i, startRank, rank, byRows)];
            result[i] = (float)(s + (values[i] - (double)s) * factor);
        }
        return result;
    }

    /// <summary>Where element i of a rank-<paramref name="rank"/> factor sits in the rank-<paramref name="startRank"/> start: A (r,C) by rows, B (O,r) by columns.</summary>
    private static int StartIndex(int i, int startRank, int rank, bool byRows) => byRows ? i : i / rank * startRank + i % rank;

    private static void ForEachPair(ClientAssignment assignment, ClientUpdate update, Action<float, float> pair)
    {
        for (var m = 0; m < update.Modules.Count; m++)
        {
            var (module, start) = (update.Modules[m], assignment.Start[m]);
            if (module.A is { } a)
            {
                for (var i = 0; i < a.Length; i++) pair(a[i], start.A[StartIndex(i, start.Rank, update.Rank, byRows: true)]);
            }
            for (var i = 0; i < module.B.Length; i++) pair(module.B[i], start.B[StartIndex(i, start.Rank, update.Rank, byRows: false)]);
        }
    }

    private static int? FirstNonFinite(float[] values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i])) return i;
        }
        return null;
    }

    private static double SumOfSquares(float[] values)
    {
        double sum = 0;
        foreach (var v in values) sum += (double)v * v;
        return sum;
    }
}
