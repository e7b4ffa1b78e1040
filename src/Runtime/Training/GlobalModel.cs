using FedLora.Federation;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.Training;

namespace FedLora.Runtime;

/// <summary>The global model a strategy's state describes: base weights (with FLoRA's merged updates) plus the global adapters.</summary>
public static class GlobalModel
{
    /// <summary>W += B_stack diag(w) A_stack for every module of FLoRA's merged update, on <paramref name="model"/>'s base weights.</summary>
    public static void MergeIntoBase(Gpt model, IReadOnlyList<StackedUpdate> updates)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(updates);
        var backend = model.Backend;
        foreach (var update in updates)
        {
            var (c, o, rank) = (update.Module.InFeatures, update.Module.OutFeatures, update.Rank);
            using var b = backend.Allocate(update.B.Length);
            using var a = backend.Allocate(update.A.Length);
            backend.Upload(update.B, b);
            backend.Upload(update.A, a);
            backend.StackedAggregation(o, c, rank, b, a, update.RowWeights, model.Layout.View(model.Parameters, update.Module.Name + ".weight"));
        }
    }

    /// <summary>The state's global adapters on <paramref name="model"/>'s backend; null when everything lives in the base (FLoRA).</summary>
    public static AdapterSet? Adapters(Gpt model, GlobalState state)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(state);
        if (state.Rank == 0) return null;
        var adapters = new AdapterSet(model.Backend, state.Modules, state.Rank, state.Alpha, state.Scaling);
        for (var m = 0; m < state.Adapters.Count; m++)
        {
            model.Backend.Upload(state.Adapters[m].A, adapters.Adapters[m].A);
            model.Backend.Upload(state.Adapters[m].B, adapters.Adapters[m].B);
        }
        return adapters;
    }

    /// <summary>Mean loss per target token of the global model on each evaluation set, by name.</summary>
    public static IReadOnlyDictionary<string, double> Evaluate(Gpt model, GlobalState state, IReadOnlyList<EvaluationSet> evaluation)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        using var adapters = Adapters(model, state);
        model.Attach(adapters);
        try
        {
            var losses = new Dictionary<string, double>();
            foreach (var set in evaluation) losses[set.Name] = LocalTrainer.Evaluate(model, set.Batches).Loss;
            return losses;
        }
        finally
        {
            model.Attach(null);
        }
    }
}
