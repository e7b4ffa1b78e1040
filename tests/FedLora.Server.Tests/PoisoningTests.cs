using FedLora.Federation;
namespace FedLora.Server.Tests;

/// <summary>One sampled client cannot poison the job: clipped updates, checked aggregates, bounded example counts, robust rules.</summary>
public sealed class PoisoningTests
{
    private static bool AllFinite(GlobalState state) => state.Adapters.All(a => a.A.All(float.IsFinite) && a.B.All(float.IsFinite));

    [Fact]
    public void FlexLora_UpdateOf1e20_IsClippedAndTheJobFinishesFinite()
    {
        using var harness = new NetworkHarness("flexlora", [4, 2, 1], clientsPerRound: 3, rounds: 2);
        var options = harness.Options;
        var coordinator = harness.Coordinator(options, new TestClock());
        ChaosKit.EnrollAll(coordinator, [0, 1, 2]);
        coordinator.Submit(0, 0, ChaosKit.Train(coordinator, 0, options));
        coordinator.Submit(1, 0, ChaosKit.Train(coordinator, 1, options));
        coordinator.Submit(2, 0, ChaosKit.Crafted(ChaosKit.AssignmentOf(coordinator, 2), _ => 1e20f));

        Assert.Equal(1, coordinator.State.Round);
        Assert.True(AllFinite(coordinator.State), "the state stays finite");
        // The honest clients are not locked out: round 1 takes their updates and the job ends.
        for (var id = 0; id < 3; id++) coordinator.Submit(id, 1, ChaosKit.Train(coordinator, id, options));
        Assert.Equal(RoundPhase.Finished, coordinator.Status().Phase);
        Assert.True(AllFinite(coordinator.State));
    }

    [Fact]
    public void Clip_LargeButFiniteChange_IsScaledToExactlyTheClipAndAnHonestOneIsUntouched()
    {
        using var harness = new NetworkHarness("hetlora", [4, 2, 1], clientsPerRound: 3, rounds: 1);
        var coordinator = harness.Coordinator(harness.Options, new TestClock());
        ChaosKit.EnrollAll(coordinator, [0, 1, 2]);
        var assignment = ChaosKit.AssignmentOf(coordinator, 0);
        var clip = harness.Options.ClipOf(assignment);
        // lr 1e-2, 2 steps, factor 10: 0.2 sqrt(n).
        var trained = assignment.Start.Sum(a => a.A.Length + a.B.Length);
        Assert.Equal(10 * 1e-2 * 2 * Math.Sqrt(trained), clip, 1e-6);

        var large = UpdateValidator.Decode(assignment, ChaosKit.Crafted(assignment, i => 5f + i % 3), long.MaxValue);
        var norm = UpdateGuard.ChangeNorm(assignment, large);
        Assert.True(norm > 2 * clip);
        var clipped = UpdateGuard.Clip(assignment, large, norm, clip);
        Assert.Equal(clip, UpdateGuard.ChangeNorm(assignment, clipped), clip * 1e-5);

        var honest = UpdateValidator.Decode(assignment, ChaosKit.Train(coordinator, 0, harness.Options), long.MaxValue);
        var honestNorm = UpdateGuard.ChangeNorm(assignment, honest);
        Assert.InRange(honestNorm, 1e-9, clip / 3);
        Assert.Same(honest, UpdateGuard.Clip(assignment, honest, honestNorm, clip));
    }

    [Fact]
    public void FedIt_UpdateOf3e38_MovesTheStateByAtMostTheClip()
    {
        using var harness = new NetworkHarness("fedit", [1, 1, 1], clientsPerRound: 3, rounds: 1);
        var options = harness.Options;
        var coordinator = harness.Coordinator(options, new TestClock());
        ChaosKit.EnrollAll(coordinator, [0, 1, 2]);
        var before = coordinator.State;
        var clip = options.ClipOf(ChaosKit.AssignmentOf(coordinator, 2));
        coordinator.Submit(0, 0, ChaosKit.Train(coordinator, 0, options));
        coordinator.Submit(1, 0, ChaosKit.Train(coordinator, 1, options));
        coordinator.Submit(2, 0, ChaosKit.Crafted(ChaosKit.AssignmentOf(coordinator, 2), i => i % 2 == 0 ? 3e38f : -3e38f));

        // FedIT's next state is sum_k p_k (start + change_k) with every change clipped to the clip: it moves by at most the clip.
        var after = coordinator.State;
        Assert.True(AllFinite(after));
        var moved = Math.Sqrt(before.Adapters.Zip(after.Adapters).Sum(p =>
            p.First.A.Zip(p.Second.A).Sum(v => Math.Pow(v.Second - v.First, 2)) + p.First.B.Zip(p.Second.B).Sum(v => Math.Pow(v.Second - v.First, 2))));
        Assert.InRange(moved, 0, clip * 1.0001);
    }

    [Fact]
    public void Aggregate_NonFinite_IsRedoneWithoutTheOffenderAndEqualsARoundWithoutIt()
    {
        using var harness = new NetworkHarness("flexlora", [4, 2, 1], clientsPerRound: 3, rounds: 1);
        // Clip off: only the aggregate check stands between the 1e20 update and the state.
        var options = harness.Options with { UpdateNormFactor = 0, Quorum = 2, RoundDeadline = TimeSpan.FromMinutes(1) };
        var attacked = harness.Coordinator(options, new TestClock());
        ChaosKit.EnrollAll(attacked, [0, 1, 2]);
        var honest = new[] { ChaosKit.Train(attacked, 0, options), ChaosKit.Train(attacked, 1, options) };
        attacked.Submit(0, 0, honest[0]);
        attacked.Submit(1, 0, honest[1]);
        attacked.Submit(2, 0, ChaosKit.Crafted(ChaosKit.AssignmentOf(attacked, 2), _ => 1e20f));

        // Control: the same round where client 2 never reports and the round closes at its deadline with the other two.
        var clock = new TestClock();
        var control = harness.Coordinator(options, clock);
        ChaosKit.EnrollAll(control, [0, 1, 2]);
        control.Submit(0, 0, honest[0]);
        control.Submit(1, 0, honest[1]);
        clock.Now += TimeSpan.FromMinutes(2);
        control.Tick();

        Assert.Equal(RoundPhase.Finished, attacked.Status().Phase);
        Assert.True(AllFinite(attacked.State));
        Assert.Equal(NetworkHarness.Flatten(control.State), NetworkHarness.Flatten(attacked.State));
    }

    [Fact]
    public void Enroll_HugeSelfReportedCount_IsRefusedAndADeclaredCountWins()
    {
        using var harness = new NetworkHarness("fedit", [1, 1], clientsPerRound: 2, rounds: 1);
        var coordinator = harness.Coordinator(harness.Options, new TestClock());
        var refused = Assert.Throws<UploadRejectedException>(() => coordinator.Enroll(0, int.MaxValue));
        Assert.Equal(400, refused.StatusCode);
        Assert.Contains("above this server's limit of 100000", refused.Message, StringComparison.Ordinal);

        var declared = harness.Coordinator(harness.Options with { DeclaredExampleCounts = [3, 4] }, new TestClock());
        declared.Enroll(0, int.MaxValue);
        declared.Enroll(1, 4);
        Assert.Equal(3, ChaosKit.AssignmentOf(declared, 0).Client.ExampleCount);
    }

    public static TheoryData<AggregationRule> RobustRules() => [AggregationRule.Median, AggregationRule.TrimmedMean];

    /// <summary>
    /// The stated bound: under the median, or the trimmed mean dropping at least one value per end, one malicious client of
    /// ten cannot move any coordinate outside the range of the nine honest clients' values there. The same attack under
    /// FedIT's own weighted average (with a client that claims many examples) does.
    /// </summary>
    [Theory, MemberData(nameof(RobustRules))]
    public void Robust_OneMaliciousClientOfTen_KeepsEveryCoordinateWithinTheHonestRange(AggregationRule rule)
    {
        const int Clients = 10, Attacker = 3;
        using var harness = new NetworkHarness("fedit", Enumerable.Repeat(1, Clients).ToArray(), clientsPerRound: Clients, rounds: 1);
        var options = harness.Options with { MaxUpdateNorm = 1e6, DeclaredExampleCounts = [.. Enumerable.Range(0, Clients).Select(id => (int?)(id == Attacker ? 1000 : 3))] };
        GlobalState Run(AggregationRule aggregation, out List<float[]> honest)
        {
            var coordinator = harness.Coordinator(options with { Aggregation = aggregation }, new TestClock());
            ChaosKit.EnrollAll(coordinator, Enumerable.Range(0, Clients));
            honest = [];
            for (var id = 0; id < Clients; id++)
            {
                var assignment = ChaosKit.AssignmentOf(coordinator, id);
                var client = id;
                float Honest(int i) => 0.01f * MathF.Sin(0.7f * i + client);
                if (id != Attacker) honest.Add(Flat(assignment, i => Honest(i)));
                coordinator.Submit(id, 0, ChaosKit.Crafted(assignment, i => id == Attacker ? 500f : Honest(i)));
            }
            return coordinator.State;
        }
        var robust = NetworkHarness.Flatten(Run(rule, out var values)).SelectMany(v => v).ToArray();
        for (var i = 0; i < robust.Length; i++)
        {
            var (low, high) = (values.Min(v => v[i]), values.Max(v => v[i]));
            Assert.True(robust[i] >= low && robust[i] <= high, $"coordinate {i}: {robust[i]} outside the honest range [{low}, {high}]");
        }
        var plain = NetworkHarness.Flatten(Run(AggregationRule.Strategy, out _)).SelectMany(v => v).ToArray();
        Assert.Contains(Enumerable.Range(0, plain.Length), i => plain[i] > values.Max(v => v[i]));
    }

    /// <summary>The values <see cref="ChaosKit.Crafted"/> puts in A then B of every module, in <see cref="NetworkHarness.Flatten"/>'s order.</summary>
    private static float[] Flat(ClientAssignment assignment, Func<int, float> value) =>
        assignment.Start.SelectMany(a => a.A.Select((_, i) => value(i)).Concat(a.B.Select((_, i) => value(i)))).ToArray();
}
