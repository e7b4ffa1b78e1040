using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using FedLora.Federation;
using FedLora.Lora.Safetensors;
using FedLora.Runtime;

namespace FedLora.Server.Tests;

/// <summary>Every bad upload is refused with the right status and a message saying what was wrong, and leaves the global state untouched.</summary>
public sealed class UploadValidationTests : IAsyncLifetime, IDisposable
{
    private readonly NetworkHarness _harness = new("fslora", [4, 2], clientsPerRound: 2, rounds: 2);
    private FederatedServer _server = null!;
    private GlobalState _initial = null!;
    private ClientAssignment _assignment = null!;

    public async Task InitializeAsync()
    {
        _harness.Options = _harness.Options with { MaxUploadBytes = 64 * 1024 };
        _server = await _harness.StartServerAsync();
        _initial = _server.Coordinator.State;
        for (var id = 0; id < 2; id++)
        {
            using var enrolled = await Send(id, HttpMethod.Post, $"v1/clients/{id}/enroll", JsonContent.Create(new EnrollRequest(3 + id)));
            Assert.Equal(HttpStatusCode.OK, enrolled.StatusCode);
        }
        _assignment = await AssignmentOf(0);
    }

    public async Task DisposeAsync() => await _server.DisposeAsync();

    public void Dispose() => _harness.Dispose();

    private async Task<HttpResponseMessage> Send(int tokenOf, HttpMethod method, string path, HttpContent? content = null, string? token = null)
    {
        using var request = new HttpRequestMessage(method, new Uri(_server.Address!, path)) { Content = content };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token ?? _harness.Tokens[tokenOf]);
        return await _harness.Http(_server.Address!).SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
    }

    private async Task<ClientAssignment> AssignmentOf(int id)
    {
        using var response = await Send(id, HttpMethod.Get, $"v1/clients/{id}/assignment");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return AssignmentCodec.Decode(await response.Content.ReadAsByteArrayAsync());
    }

    /// <summary>The assignment's start sent straight back: a valid update, optionally altered per tensor.</summary>
    private static byte[] Update(ClientAssignment assignment, Action<string, float[]>? alter = null, int extraRank = 0, Func<int[], int[]>? indices = null,
        string? extraTensor = null, bool dropFirst = false)
    {
        var writer = new SafetensorsWriter();
        var rank = assignment.Rank + extraRank;
        for (var m = 0; m < assignment.Modules.Count; m++)
        {
            var (module, start) = (assignment.Modules[m], assignment.Start[m]);
            var a = new float[rank * module.InFeatures];
            start.A.CopyTo(a, 0);
            var b = new float[module.OutFeatures * rank];
            for (var o = 0; o < module.OutFeatures; o++) start.B.AsSpan(o * assignment.Rank, assignment.Rank).CopyTo(b.AsSpan(o * rank));
            alter?.Invoke($"{module.Name}.lora_A.weight", a);
            alter?.Invoke($"{module.Name}.lora_B.weight", b);
            if (!(dropFirst && m == 0)) writer.AddFloats($"{module.Name}.lora_A.weight", a, rank, module.InFeatures);
            writer.AddFloats($"{module.Name}.lora_B.weight", b, module.OutFeatures, rank);
            var set = assignment.RankIndices![m];
            writer.AddInt32s($"{module.Name}.lora_rank_indices", indices is null ? set : indices(set), rank);
        }
        if (extraTensor is not null) writer.AddFloats(extraTensor, [1f], 1);
        return writer.ToArray();
    }

    private async Task AssertRefused(HttpStatusCode status, string expectedMessage, byte[] payload, int round = 0, int clientId = 0, int? tokenOf = null, string? token = null)
    {
        var content = new ByteArrayContent(payload);
        using var response = await Send(tokenOf ?? clientId, HttpMethod.Post, $"v1/clients/{clientId}/rounds/{round}/update", content, token);
        var message = await response.Content.ReadAsStringAsync();
        Assert.Equal(status, response.StatusCode);
        Assert.Contains(expectedMessage, message, StringComparison.Ordinal);
        Assert.DoesNotContain(clientId, _server.Coordinator.Status().Received);
        Assert.Same(_initial, _server.Coordinator.State);
    }

    [Fact]
    public async Task Upload_WrongToken_Is401() =>
        await AssertRefused(HttpStatusCode.Unauthorized, "unknown token", Update(_assignment), token: "not-a-token-of-this-job-at-all");

    [Fact]
    public async Task Upload_AnotherClientsId_Is403() =>
        await AssertRefused(HttpStatusCode.Forbidden, "belongs to client 1, not client 0", Update(_assignment), tokenOf: 1);

    [Fact]
    public async Task Upload_FutureRound_Is409() =>
        await AssertRefused(HttpStatusCode.Conflict, "round 1 has not opened", Update(_assignment), round: 1);

    [Fact]
    public async Task Upload_WrongShape_Is400() =>
        await AssertRefused(HttpStatusCode.BadRequest, "was assigned rank", Update(_assignment, extraRank: 1, indices: set => [.. set, 3]));

    [Fact]
    public async Task Upload_WrongIndexSet_Is400() =>
        await AssertRefused(HttpStatusCode.BadRequest, "index set", Update(_assignment, indices: set => set.Select(i => (i + 1) % NetworkHarness.GlobalRank).ToArray()));

    [Fact]
    public async Task Upload_NaN_Is400() =>
        await AssertRefused(HttpStatusCode.BadRequest, "non-finite value (NaN)", Update(_assignment, (name, values) => { if (name.EndsWith("B.weight", StringComparison.Ordinal)) values[1] = float.NaN; }));

    [Fact]
    public async Task Upload_Infinity_Is400() =>
        await AssertRefused(HttpStatusCode.BadRequest, "non-finite value", Update(_assignment, (_, values) => values[0] = float.PositiveInfinity));

    [Fact]
    public async Task Upload_MissingTensor_Is400() =>
        await AssertRefused(HttpStatusCode.BadRequest, "missing tensor", Update(_assignment, dropFirst: true));

    [Fact]
    public async Task Upload_UnexpectedTensor_Is400() =>
        await AssertRefused(HttpStatusCode.BadRequest, "unexpected tensor 'smuggled'", Update(_assignment, extraTensor: "smuggled"));

    [Fact]
    public async Task Upload_AboveServerWideLimit_Is413() =>
        await AssertRefused(HttpStatusCode.RequestEntityTooLarge, $"above the limit of {UpdateLimits.ExpectedBytes(_assignment)} bytes", new byte[70_000]);

    [Fact]
    public async Task Upload_AboveItsAssignmentsSize_Is413BeforeTheBodyIsRead()
    {
        // Far below the server-wide limit (64 KB here), but one byte above what this client's assignment can take.
        var limit = UpdateLimits.ExpectedBytes(_assignment);
        Assert.InRange(Update(_assignment).Length, 1, limit);
        await AssertRefused(HttpStatusCode.RequestEntityTooLarge, $"above the limit of {limit} bytes for client 0's assignment", new byte[limit + 1]);
    }

    [Fact]
    public async Task Upload_Truncated_Is400()
    {
        var payload = Update(_assignment);
        await AssertRefused(HttpStatusCode.BadRequest, "not a valid safetensors payload", payload[..(payload.Length - 7)]);
    }

    [Fact]
    public async Task Upload_NotSampledClientOrUnknownId_IsRefused()
    {
        await AssertRefused(HttpStatusCode.NotFound, "there is no client 7", Update(_assignment), clientId: 7, tokenOf: 0);
    }

    [Fact]
    public async Task Upload_ValidThenDuplicateThenStale_AcceptedOnceThen409()
    {
        using (var accepted = await Send(0, HttpMethod.Post, "v1/clients/0/rounds/0/update", new ByteArrayContent(Update(_assignment))))
        {
            Assert.Equal(HttpStatusCode.OK, accepted.StatusCode);
        }
        using (var duplicate = await Send(0, HttpMethod.Post, "v1/clients/0/rounds/0/update", new ByteArrayContent(Update(_assignment))))
        {
            Assert.Equal(HttpStatusCode.Conflict, duplicate.StatusCode);
            Assert.Contains("client 0 already reported for round 0", await duplicate.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        var other = await AssignmentOf(1);
        using (var second = await Send(1, HttpMethod.Post, "v1/clients/1/rounds/0/update", new ByteArrayContent(Update(other))))
        {
            Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        }
        Assert.Equal(1, _server.Coordinator.State.Round);
        var afterRound = _server.Coordinator.State;
        using var stale = await Send(0, HttpMethod.Post, "v1/clients/0/rounds/0/update", new ByteArrayContent(Update(_assignment)));
        Assert.Equal(HttpStatusCode.Conflict, stale.StatusCode);
        Assert.Contains("round 0 is closed (late update refused); the current round is 1", await stale.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Same(afterRound, _server.Coordinator.State);
        Assert.Empty(_server.Coordinator.Status().Received);
    }
}
