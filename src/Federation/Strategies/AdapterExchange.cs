using FedLora.Kernels;
using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// The client's side of an assignment: the assignment into an <see cref="AdapterSet"/> before local
/// training, the trained factors back out as a <see cref="ClientUpdate"/>. Both ends check what the
/// published implementations got wrong: the scale a module trains with must be the assignment's (the
/// one the server weights by); under an FSLoRA sketch only the ranks in I may change; under FFA-LoRA
/// A may not change.
/// </summary>
public static class AdapterExchange
{
    /// <summary>
    /// Allocates <c>AdapterSet(backend, Modules, AdapterRank, Alpha, Scaling)</c> and loads the
    /// assignment into it (see <see cref="Load"/>). The caller owns the result.
    /// </summary>
    public static AdapterSet Create(Backend backend, ClientAssignment assignment)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(assignment);
        var adapters = new AdapterSet(backend, assignment.Modules, assignment.AdapterRank, assignment.Alpha, assignment.Scaling);
        try
        {
            Load(assignment, adapters);
            return adapters;
        }
        catch
        {
            adapters.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes the assignment's start into <paramref name="adapters"/>. For an FSLoRA sketch the
    /// sub-adapter goes to A's rows I and B's columns I, every other rank is zero, and the module is
    /// restricted to I with <see cref="AdapterSet.SetSketch"/>. Throws if any module would train at a
    /// scale other than <see cref="ClientAssignment.Scale"/>.
    /// </summary>
    public static void Load(ClientAssignment assignment, AdapterSet adapters)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        ArgumentNullException.ThrowIfNull(adapters);
        CheckLayout(assignment, adapters);
        var backend = adapters.Backend;
        for (var m = 0; m < assignment.Modules.Count; m++)
        {
            var start = assignment.Start[m];
            var adapter = adapters.Adapters[m];
            var indices = assignment.RankIndices?[m];
            if (indices is null)
            {
                backend.Upload(start.A, adapter.A);
                backend.Upload(start.B, adapter.B);
            }
            else
            {
                var (c, o, r) = (start.Module.InFeatures, start.Module.OutFeatures, adapters.Rank);
                var a = new float[r * c];
                var b = new float[o * r];
                for (var j = 0; j < indices.Length; j++)
                {
                    start.A.AsSpan(j * c, c).CopyTo(a.AsSpan(indices[j] * c, c));
                    for (var row = 0; row < o; row++) b[row * r + indices[j]] = start.B[row * indices.Length + j];
                }
                backend.Upload(a, adapter.A);
                backend.Upload(b, adapter.B);
            }
            adapters.SetSketch(m, indices);
            if (adapters.ActiveScale(m) != assignment.Scale)
            {
                throw new InvalidOperationException(
                    $"module {start.Module.Name} would train at scale {adapters.ActiveScale(m)} but client {assignment.ClientId}'s assignment says {assignment.Scale}: the server would weight the update by a scale the client did not train with");
            }
        }
    }

    /// <summary>
    /// Reads the trained factors back as the update to upload: the sketched ranks I for FSLoRA (after
    /// checking that no other rank moved), B alone for FFA-LoRA (after checking that A did not move),
    /// and for HetLoRA the rank its self-pruning rule keeps.
    /// </summary>
    public static ClientUpdate Collect(ClientAssignment assignment, AdapterSet adapters)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        ArgumentNullException.ThrowIfNull(adapters);
        CheckLayout(assignment, adapters);
        var backend = adapters.Backend;
        var trained = new HostAdapter[assignment.Modules.Count];
        for (var m = 0; m < trained.Length; m++)
        {
            var module = assignment.Modules[m];
            var full = new HostAdapter(module, adapters.Rank, backend.ToArray(adapters.Adapters[m].A), backend.ToArray(adapters.Adapters[m].B));
            var indices = assignment.RankIndices?[m];
            CheckStillConfigured(assignment, adapters, m);
            if (indices is not null) CheckOutsideSketchUnchanged(assignment, full, indices);
            trained[m] = indices is null ? full : LowRank.Gather(full, indices);
            if (assignment.Trainable == TrainableFactors.BOnly && !trained[m].A.AsSpan().SequenceEqual(assignment.Start[m].A))
            {
                throw new InvalidOperationException($"A of module {module.Name} changed during client {assignment.ClientId}'s training, but only B is trainable");
            }
        }
        var rank = assignment.Regularizer?.RankAfterTraining(assignment.Rank, assignment.Start, trained) ?? assignment.Rank;
        var modules = new ModuleUpdate[trained.Length];
        for (var m = 0; m < trained.Length; m++)
        {
            var kept = rank == assignment.Rank ? trained[m] : LowRank.Truncate(trained[m], rank);
            modules[m] = new ModuleUpdate(kept.Module, assignment.Trainable == TrainableFactors.BOnly ? null : kept.A, kept.B, assignment.RankIndices?[m]);
        }
        return new ClientUpdate(assignment.ClientId, assignment.Round, rank, modules);
    }

    private static void CheckLayout(ClientAssignment assignment, AdapterSet adapters)
    {
        if (adapters.Rank != assignment.AdapterRank) throw new ArgumentException($"the adapter set has rank {adapters.Rank} but the assignment needs {assignment.AdapterRank}", nameof(adapters));
        if (!adapters.Modules.SequenceEqual(assignment.Modules)) throw new ArgumentException("the adapter set's modules are not the assignment's", nameof(adapters));
    }

    /// <summary>The model must still train module m as loaded: the same sketch (or none) and the same scale.</summary>
    private static void CheckStillConfigured(ClientAssignment assignment, AdapterSet adapters, int m)
    {
        var expected = assignment.RankIndices?[m];
        var active = adapters.ActiveIndices(m);
        var sameSketch = expected is null ? active is null : active is not null && active.AsSpan().SequenceEqual(expected);
        if (!sameSketch || adapters.ActiveScale(m) != assignment.Scale)
        {
            throw new InvalidOperationException(
                $"module {assignment.Modules[m].Name} trained with ranks [{(active is null ? "all" : string.Join(", ", active))}] at scale {adapters.ActiveScale(m)}, but client {assignment.ClientId}'s assignment is ranks [{(expected is null ? "all" : string.Join(", ", expected))}] at scale {assignment.Scale}");
        }
    }

    /// <summary>Load wrote zeros outside I; a nonzero there means training was not restricted to the sketch.</summary>
    private static void CheckOutsideSketchUnchanged(ClientAssignment assignment, HostAdapter full, int[] indices)
    {
        var (c, o, r) = (full.Module.InFeatures, full.Module.OutFeatures, full.Rank);
        var inSketch = new bool[r];
        foreach (var index in indices) inSketch[index] = true;
        for (var j = 0; j < r; j++)
        {
            if (inSketch[j]) continue;
            var moved = full.A.AsSpan(j * c, c).ContainsAnyExcept(0f);
            for (var row = 0; row < o && !moved; row++) moved = full.B[row * r + j] != 0f;
            if (moved)
            {
                throw new InvalidOperationException(
                    $"rank {j} of module {full.Module.Name} changed during client {assignment.ClientId}'s training but is outside its sketch [{string.Join(", ", indices)}]: the sketch did not restrict training");
            }
        }
    }
}
