using System.Net.Sockets;
using System.Text;
using FedLora.Federation;
using FedLora.Kernels.Cpu;
using FedLora.Lora.Safetensors;
using FedLora.Model;
using FedLora.Model.Data;
using FedLora.Runtime;

namespace FedLora.Server.Tests;

/// <summary>A clock the test moves.</summary>
internal sealed class TestClock : TimeProvider
{
    public DateTimeOffset Now { get; set; } = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() => Now;
}

/// <summary>What the chaos tests send: honest trained updates, crafted ones, raw bytes on a socket.</summary>
internal static class ChaosKit
{
    /// <summary>Client <paramref name="id"/>'s real local training on its current assignment, as a payload.</summary>
    public static byte[] Train(RoundCoordinator coordinator, int id, ServerOptions options)
    {
        var assignment = AssignmentOf(coordinator, id);
        using var backend = new CpuBackend();
        using var model = new Gpt(backend, NetworkHarness.Config, NetworkHarness.Batch, NetworkHarness.Time);
        coordinator.WithModel((server, _) => { backend.Upload(server.Backend.ToArray(server.Parameters), model.Parameters); return 0; });
        var batches = new InstructionBatcher(NetworkHarness.ClientExamples(id), NetworkHarness.Batch, NetworkHarness.Time, RoundSchedule.BatchSeed(options.Seed, assignment.Round, id));
        var (update, _) = ClientTraining.Train(model, assignment, batches, options.Local);
        return WirePayload.Serialize(update.Upload);
    }

    public static ClientAssignment AssignmentOf(RoundCoordinator coordinator, int id) => AssignmentCodec.Decode(coordinator.AssignmentFor(id).Payload!);

    /// <summary>The assignment's start sent back with every trained value replaced by <paramref name="value"/>(index).</summary>
    public static byte[] Crafted(ClientAssignment assignment, Func<int, float> value)
    {
        var writer = new SafetensorsWriter();
        for (var m = 0; m < assignment.Modules.Count; m++)
        {
            var (module, start) = (assignment.Modules[m], assignment.Start[m]);
            if (assignment.Trainable == TrainableFactors.Both) writer.AddFloats($"{module.Name}.lora_A.weight", start.A.Select((_, i) => value(i)).ToArray(), assignment.Rank, module.InFeatures);
            writer.AddFloats($"{module.Name}.lora_B.weight", start.B.Select((_, i) => value(i)).ToArray(), module.OutFeatures, assignment.Rank);
            if (assignment.RankIndices is { } indices) writer.AddInt32s($"{module.Name}.lora_rank_indices", indices[m], assignment.Rank);
        }
        return writer.ToArray();
    }

    /// <summary>Every client of <paramref name="ids"/> enrolls with its harness example count.</summary>
    public static void EnrollAll(RoundCoordinator coordinator, IEnumerable<int> ids)
    {
        foreach (var id in ids) coordinator.Enroll(id, NetworkHarness.ClientExamples(id).Count);
    }

    /// <summary>Sends raw <paramref name="head"/> (request line and headers) and reads the reply's status line, within 20 s.</summary>
    public static async Task<string> RawStatusLine(Uri server, string head, CancellationToken cancellation = default)
    {
        using var socket = new TcpClient();
        await socket.ConnectAsync(server.Host, server.Port, cancellation);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head.ReplaceLineEndings("\r\n") + "\r\n"), cancellation);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        timeout.CancelAfter(TimeSpan.FromSeconds(20));
        var buffer = new byte[4096];
        var text = new StringBuilder();
        while (!text.ToString().Contains('\n', StringComparison.Ordinal))
        {
            var read = await stream.ReadAsync(buffer, timeout.Token);
            if (read == 0) break;
            text.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }
        return text.ToString().Split('\n')[0].Trim();
    }

    public static double Norm(GlobalState state) => Math.Sqrt(state.Adapters.Sum(a => a.A.Sum(v => (double)v * v) + a.B.Sum(v => (double)v * v)));
}
