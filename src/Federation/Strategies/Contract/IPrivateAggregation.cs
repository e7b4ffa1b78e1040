using FedLora.Federation.Privacy;

namespace FedLora.Federation;

/// <summary>
/// A strategy that can aggregate under client-level differential privacy: it forms the round's sum
/// through a <see cref="PrivateSum"/>, so that every client's contribution is clipped to S and the sum is
/// released only noised and divided by the fixed denominator M. Optional: a round loop refuses DP for a
/// strategy without it (<see cref="PrivateAggregation.RequireSupport"/>).
/// </summary>
public interface IPrivateAggregation
{
    /// <summary>
    /// The private counterpart of <see cref="IFederatedStrategy.Aggregate"/>: the updates are validated as
    /// there; each one's contribution (the method's, its doc says which) goes through
    /// <see cref="PrivateSum.ClipAndAdd"/> once; the sum through <see cref="PrivateSum.Release"/> once; the
    /// next state depends on the updates only through that release, and otherwise on public data (the state,
    /// the plan's ranks and masks), never on n_k or on who reported. A sampled client that sent nothing
    /// counts as a zero change. With z = 0, no clipping, every sampled client reporting and equal n_k it
    /// equals <see cref="IFederatedStrategy.Aggregate"/> up to rounding, unless the strategy's doc says why not.
    /// </summary>
    AggregationResult AggregatePrivately(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum);
}
