using FedLora.Lora;

namespace FedLora.Federation.Tests;

/// <summary>
/// The constructors a strategy written outside FedLora (and a networked client decoding what the
/// server sent) builds plans from: each refuses an inconsistent argument with a message naming it.
/// </summary>
public sealed class PublicConstructorTests
{
    private static readonly LoraModuleSpec Module = new("layer", InFeatures: 3, OutFeatures: 2);
    private static readonly SampledClient Client = new(4, 10, ClientBudget.OfRank(2));

    private static IReadOnlyList<HostAdapter> Start(int rank) => [HostAdapter.Fresh(Module, rank, new Random(1))];

    public static TheoryData<string, Func<ClientAssignment>> BadAssignments() => new()
    {
        { "rank 0", () => new ClientAssignment(0, Client, 0, 0, 2f, LoraScaling.Standard, 1f, Start(0), TrainableFactors.Both) },
        { "alpha must be finite", () => new ClientAssignment(0, Client, 2, 2, float.NaN, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both) },
        { "scale must be finite", () => new ClientAssignment(0, Client, 2, 2, 2f, LoraScaling.Standard, 0f, Start(2), TrainableFactors.Both) },
        { "has rank 1, but the assignment's rank is 2", () => new ClientAssignment(0, Client, 2, 2, 2f, LoraScaling.Standard, 1f, Start(1), TrainableFactors.Both) },
        { "no modules", () => new ClientAssignment(0, Client, 2, 2, 2f, LoraScaling.Standard, 1f, [], TrainableFactors.Both) },
        { "appears twice", () => new ClientAssignment(0, Client, 2, 2, 2f, LoraScaling.Standard, 1f, [.. Start(2), .. Start(2)], TrainableFactors.Both) },
        { "without a sketch (rank indices) the two must be equal", () => new ClientAssignment(0, Client, 2, 4, 2f, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both) },
        { "strictly increasing within [0, 4)", () => new ClientAssignment(0, Client, 2, 4, 2f, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both, [[3, 1]]) },
        { "strictly increasing within [0, 4)", () => new ClientAssignment(0, Client, 2, 4, 2f, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both, [[1, 4]]) },
        { "has 3 indices for rank 2", () => new ClientAssignment(0, Client, 2, 4, 2f, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both, [[0, 1, 2]]) },
        { "1 rank index sets for 2 modules", () => new ClientAssignment(0, Client, 2, 4, 2f, LoraScaling.Standard, 1f, [Start(2)[0], HostAdapter.Zero(Module with { Name = "other" }, 2)], TrainableFactors.Both, [[0, 1]]) },
        { "is not the fresh adapter of seed 2", () => new ClientAssignment(0, Client, 2, 2, 2f, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both, freshSeed: 2) },
        { "unknown trainable factors", () => new ClientAssignment(0, Client, 2, 2, 2f, LoraScaling.Standard, 1f, Start(2), (TrainableFactors)7) },
    };

    [Theory, MemberData(nameof(BadAssignments))]
    public void ClientAssignment_Inconsistent_ThrowsNamingTheProblem(string message, Func<ClientAssignment> create)
    {
        var error = Assert.ThrowsAny<ArgumentException>(create);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ClientAssignment_FreshSeedOfItsStart_IsAccepted()
    {
        var assignment = new ClientAssignment(0, Client, 2, 2, 2f, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both, freshSeed: 1);
        Assert.Equal("fresh_seed", Assert.Single(assignment.Download).Name);
    }

    [Fact]
    public void RoundPlan_AssignmentOfAnotherRound_Throws()
    {
        var assignment = new ClientAssignment(1, Client, 2, 2, 2f, LoraScaling.Standard, 1f, Start(2), TrainableFactors.Both);
        var error = Assert.Throws<ArgumentException>(() => new RoundPlan(0, [assignment]));
        Assert.Contains("is for round 1, not the plan's round 0", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new RoundPlan(0, []));
    }

    [Fact]
    public void AggregationResult_BaseUpdateOfAnotherLayer_Throws()
    {
        var state = new GlobalState(1, Start(2), 4f, LoraScaling.Standard);
        var foreign = new StackedUpdate(Module with { Name = "elsewhere" }, 1, new float[2], new float[3], [1f]);
        var error = Assert.Throws<ArgumentException>(() => new AggregationResult(state, [foreign]));
        Assert.Contains("elsewhere is for a layer the state does not adapt", error.Message, StringComparison.Ordinal);
        var own = new StackedUpdate(Module, 1, new float[2], new float[3], [1f]);
        Assert.Throws<ArgumentException>(() => new AggregationResult(state, [own, own]));
    }
}
