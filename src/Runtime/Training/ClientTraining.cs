using FedLora.Federation;
using FedLora.Kernels;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Model.Training;

namespace FedLora.Runtime;

/// <summary>
/// A client's work in a round, the same in the simulation and on a networked client: load the
/// assignment into adapters on the model, train them on the client's own batches, collect the update.
/// </summary>
public static class ClientTraining
{
    /// <summary>Trains <paramref name="assignment"/> on <paramref name="model"/>; returns the update and the mean training loss.</summary>
    public static (ClientUpdate Update, float Loss) Train(Gpt model, ClientAssignment assignment, ITokenBatchSource batches,
        TrainingOptions options, Action<StepReport>? onStep = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(assignment);
        using var adapters = AdapterExchange.Create(model.Backend, assignment);
        using var mask = TrainableMask(assignment, adapters);
        model.Attach(adapters);
        try
        {
            var loss = LocalTrainer.Train(model, adapters.Parameters, adapters.Gradients, batches, options, mask?.All, Regularizer(assignment, adapters), onStep);
            return (AdapterExchange.Collect(assignment, adapters), loss);
        }
        finally
        {
            model.Attach(null);
        }
    }

    /// <summary>
    /// The elements a client may change: A's rows and B's columns in its sketch (all ranks without one),
    /// and no A at all when only B trains. Null when everything trains.
    /// </summary>
    private static DeviceBuffer? TrainableMask(ClientAssignment assignment, AdapterSet adapters)
    {
        if (assignment.RankIndices is null && assignment.Trainable == TrainableFactors.Both) return null;
        var mask = new float[adapters.Parameters.Length];
        var r = adapters.Rank;
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var adapter = adapters.Adapters[m];
            var (c, o) = (adapter.InFeatures, adapter.OutFeatures);
            var active = new bool[r];
            if (assignment.RankIndices?[m] is { } indices) foreach (var index in indices) active[index] = true;
            else Array.Fill(active, true);
            for (var j = 0; j < r; j++)
            {
                if (!active[j]) continue;
                if (assignment.Trainable == TrainableFactors.Both) mask.AsSpan(adapter.A.Offset + j * c, c).Fill(1f);
                for (var row = 0; row < o; row++) mask[adapter.B.Offset + row * r + j] = 1f;
            }
        }
        var buffer = adapters.Backend.Allocate(mask.Length);
        adapters.Backend.Upload(mask, buffer);
        return buffer;
    }

    /// <summary>HetLoRA's rank self-pruning penalty, added to the adapters' gradients after each backward pass.</summary>
    private static Action? Regularizer(ClientAssignment assignment, AdapterSet adapters)
    {
        if (assignment.Regularizer is not { } regularizer) return null;
        var backend = adapters.Backend;
        return () =>
        {
            var parameters = backend.ToArray(adapters.Parameters);
            var gradients = backend.ToArray(adapters.Gradients);
            foreach (var adapter in adapters.Adapters)
            {
                regularizer.AccumulateGradient(parameters.AsSpan(adapter.A.Offset, adapter.A.Length), parameters.AsSpan(adapter.B.Offset, adapter.B.Length),
                    adapter.Rank, adapter.InFeatures, adapter.OutFeatures,
                    gradients.AsSpan(adapter.A.Offset, adapter.A.Length), gradients.AsSpan(adapter.B.Offset, adapter.B.Length));
            }
            backend.Upload(gradients, adapters.Gradients);
        };
    }
}
