using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using FedLora.Lora.Safetensors;

namespace FedLora.Server.Tests;

/// <summary>Connection and rate limits, bodies refused before they are read, one upload per client, logs without secrets.</summary>
public sealed class LimitsAndMemoryTests : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("fedlora-limits-");

    public void Dispose() => _folder.Delete(recursive: true);

    private string Log => File.ReadAllText(Path.Combine(_folder.FullName, FederatedServer.LogFile));

    /// <summary>Whether the server closes <paramref name="socket"/> (end of stream or reset) within 15 s without sending a byte.</summary>
    private static async Task<bool> ClosedByServer(TcpClient socket)
    {
        try
        {
            return await socket.GetStream().ReadAsync(new byte[16]).AsTask().WaitAsync(TimeSpan.FromSeconds(15)) == 0;
        }
        catch (IOException)
        {
            return true;
        }
    }

    private static async Task Enroll(HttpClient http, NetworkHarness harness, int id)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"v1/clients/{id}/enroll") { Content = JsonContent.Create(new EnrollRequest(3)) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", harness.Tokens[id]);
        using var response = await http.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    private async Task<(NetworkHarness Harness, FederatedServer Server, HttpClient Http)> Start(ServerLimits? limits = null, int clients = 3, int perRound = 1)
    {
        var harness = new NetworkHarness("fedit", Enumerable.Repeat(1, clients).ToArray(), clientsPerRound: perRound, rounds: 1);
        harness.Options = harness.Options with { StateDirectory = _folder.FullName, Limits = limits ?? NetworkHarness.LoopbackLimits };
        var server = await harness.StartServerAsync();
        return (harness, server, harness.Http(server.Address!));
    }

    [Fact]
    public async Task Upload_ClientNotSampled_IsRefusedBeforeItsBodyIsSent()
    {
        var (harness, server, http) = await Start();
        using var _ = harness;
        await using var __ = server;
        for (var id = 0; id < 3; id++) await Enroll(http, harness, id);
        var outsider = Enumerable.Range(0, 3).First(id => !server.Coordinator.Status().Sampled.Contains(id));
        // 250 MB announced, not a byte sent: the answer comes from the headers alone.
        var status = await ChaosKit.RawStatusLine(server.Address!,
            $"POST /v1/clients/{outsider}/rounds/0/update HTTP/1.1\nHost: x\nAuthorization: Bearer {harness.Tokens[outsider]}\nContent-Length: 262144000\n");
        Assert.StartsWith("HTTP/1.1 403", status, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Upload_AboveTheAssignmentsSize_And_EnrollWithoutToken_AreRefusedBeforeTheBodyIsSent()
    {
        var (harness, server, http) = await Start(perRound: 3);
        using var _ = harness;
        await using var __ = server;
        for (var id = 0; id < 3; id++) await Enroll(http, harness, id);
        var tooLarge = await ChaosKit.RawStatusLine(server.Address!,
            $"POST /v1/clients/0/rounds/0/update HTTP/1.1\nHost: x\nAuthorization: Bearer {harness.Tokens[0]}\nContent-Length: 36700160\n");
        Assert.StartsWith("HTTP/1.1 413", tooLarge, StringComparison.Ordinal);
        var anonymous = await ChaosKit.RawStatusLine(server.Address!,
            "POST /v1/clients/0/enroll HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 209715200\n");
        Assert.StartsWith("HTTP/1.1 401", anonymous, StringComparison.Ordinal);
        var bigEnroll = await ChaosKit.RawStatusLine(server.Address!,
            $"POST /v1/clients/0/enroll HTTP/1.1\nHost: x\nAuthorization: Bearer {harness.Tokens[0]}\nContent-Type: application/json\nContent-Length: 209715200\n");
        Assert.StartsWith("HTTP/1.1 413", bigEnroll, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Upload_SecondWhileTheFirstIsInFlight_Is409()
    {
        var (harness, server, http) = await Start(perRound: 3);
        using var _ = harness;
        await using var __ = server;
        for (var id = 0; id < 3; id++) await Enroll(http, harness, id);
        var assignment = ChaosKit.AssignmentOf(server.Coordinator, 0);
        var payload = ChaosKit.Crafted(assignment, i => 0.001f * i);
        using var slow = new TcpClient();
        await slow.ConnectAsync(server.Address!.Host, server.Address.Port);
        var stream = slow.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"POST /v1/clients/0/rounds/0/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {harness.Tokens[0]}\r\nContent-Length: {payload.Length}\r\n\r\n"));
        await stream.WriteAsync(payload.AsMemory(0, payload.Length / 2));
        await stream.FlushAsync();
        // The second upload must find the first one's slot taken: wait until the server has read the first
        // one's headers and reserved it (a second sent earlier would be the first to arrive, and succeed).
        var started = DateTime.UtcNow;
        while (!server.Coordinator.IsUploading(0))
        {
            Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(20), "the server never began the first upload");
            await Task.Delay(10);
        }
        using (var request = new HttpRequestMessage(HttpMethod.Post, "v1/clients/0/rounds/0/update") { Content = new ByteArrayContent(payload) })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", harness.Tokens[0]);
            using var response = await http.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
            Assert.Contains("already uploading", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        await stream.WriteAsync(payload.AsMemory(payload.Length / 2));
        var reply = new byte[256];
        var read = await stream.ReadAsync(reply).AsTask().WaitAsync(TimeSpan.FromSeconds(20));
        Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(reply, 0, read), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Connections_BeyondThePerAddressLimit_AreClosedAndLogged_AndTheServerStaysUp()
    {
        var (harness, server, http) = await Start(NetworkHarness.LoopbackLimits with { MaxConnectionsPerAddress = 4 });
        using var _ = harness;
        await using var __ = server;
        var idle = new List<TcpClient>();
        try
        {
            for (var i = 0; i < 4; i++)
            {
                var socket = new TcpClient();
                await socket.ConnectAsync(server.Address!.Host, server.Address.Port);
                idle.Add(socket);
            }
            await Task.Delay(300);
            using var extra = new TcpClient();
            await extra.ConnectAsync(server.Address!.Host, server.Address.Port);
            Assert.True(await ClosedByServer(extra), "the connection beyond the limit is closed at once");
        }
        finally
        {
            foreach (var socket in idle) socket.Dispose();
        }
        Assert.Contains("refused: it already has 4 open connections (limit 4)", Log, StringComparison.Ordinal);
        await Task.Delay(300);
        http.DefaultRequestHeaders.Authorization = new("Bearer", harness.Tokens[0]);
        using var status = await http.GetAsync(new Uri("v1/status", UriKind.Relative)).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(HttpStatusCode.OK, status.StatusCode);
    }

    [Fact]
    public async Task Connection_IdleWithoutAByte_IsClosedAfterTheKeepAliveTimeout()
    {
        var (harness, server, _) = await Start(NetworkHarness.LoopbackLimits with { KeepAliveTimeout = TimeSpan.FromSeconds(1) });
        using var __ = harness;
        await using var ___ = server;
        using var idle = new TcpClient();
        await idle.ConnectAsync(server.Address!.Host, server.Address.Port);
        Assert.True(await ClosedByServer(idle), "the idle connection is closed");
    }

    [Fact]
    public async Task Requests_AboveTheClientsRate_Get429AndAreLogged()
    {
        var (harness, server, http) = await Start(NetworkHarness.LoopbackLimits with { RequestsPerSecondPerClient = 1 });
        using var _ = harness;
        await using var __ = server;
        http.DefaultRequestHeaders.Authorization = new("Bearer", harness.Tokens[2]);
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 30; i++)
        {
            using var response = await http.GetAsync(new Uri("v1/status", UriKind.Relative)).WaitAsync(TimeSpan.FromSeconds(30));
            statuses.Add(response.StatusCode);
        }
        Assert.Contains(HttpStatusCode.OK, statuses);
        Assert.Contains(HttpStatusCode.TooManyRequests, statuses);
        Assert.Contains("request rate limit reached (address or client 2)", Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Job_LogsRequestIdClientRoundAndOutcome_AndNeverATokenOrItsHash()
    {
        var (harness, server, _) = await Start(clients: 2, perRound: 2);
        using var __ = harness;
        await using (server)
        {
            await harness.RunClientsAsync(server.Address!);
            await server.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        }
        var log = Log;
        Assert.Contains("\"RequestId\":", log, StringComparison.Ordinal);
        Assert.Contains("\"ClientId\":1", log, StringComparison.Ordinal);
        Assert.Contains("\"Round\":0", log, StringComparison.Ordinal);
        Assert.Contains("round 0: update of client 1 accepted", log, StringComparison.Ordinal);
        Assert.Contains("round 0 closed with 2 updates and saved", log, StringComparison.Ordinal);
        foreach (var token in harness.Tokens)
        {
            var hash = SHA256.HashData(Encoding.UTF8.GetBytes(token));
            Assert.DoesNotContain(token, log, StringComparison.Ordinal);
            Assert.DoesNotContain(Convert.ToHexString(hash), log, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain(Convert.ToBase64String(hash), log, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Status_ForAClient_ShowsOnlyItsOwnPart()
    {
        var (harness, server, http) = await Start(clients: 3, perRound: 2);
        using var _ = harness;
        await using var __ = server;
        for (var id = 0; id < 3; id++) await Enroll(http, harness, id);
        var sampled = server.Coordinator.Status().Sampled;
        Assert.Equal(2, sampled.Length);
        for (var id = 0; id < 3; id++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "v1/status");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", harness.Tokens[id]);
            using var response = await http.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
            var status = (await response.Content.ReadFromJsonAsync<RoundStatus>())!;
            Assert.Equal(sampled.Contains(id) ? [id] : [], status.Sampled);
        }
    }

    [Fact]
    public void Upload_MegabyteTensorName_RefusalMessageIsCut()
    {
        using var harness = new NetworkHarness("fedit", [1, 1], clientsPerRound: 2, rounds: 1);
        var coordinator = harness.Coordinator(harness.Options, new TestClock());
        ChaosKit.EnrollAll(coordinator, [0, 1]);
        var assignment = ChaosKit.AssignmentOf(coordinator, 0);
        var writer = new SafetensorsWriter();
        writer.AddFloats(new string('x', 1 << 20), [1f], 1);
        var error = Assert.Throws<UploadRejectedException>(() => UpdateValidator.Decode(assignment, writer.ToArray(), long.MaxValue));
        Assert.InRange(error.Message.Length, 1, UploadRejectedException.MaxMessageLength + 60);
        var viaServer = Assert.Throws<UploadRejectedException>(() => coordinator.Submit(0, 0, writer.ToArray()));
        Assert.InRange(viaServer.Message.Length, 1, UploadRejectedException.MaxMessageLength + 60);
    }
}
