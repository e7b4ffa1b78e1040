using FedLora.Federation.Privacy;
using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// FSLoRA, federated sketching LoRA (Fang et al., 2025): every client trains a random sketch of one
/// global adapter.
/// <code>
/// state      per module A (r,C), B (O,r), scale s = LoraScale.Of(alpha, r)
/// configure  m_k = ceil(ratio_k r); per module I_k = m_k distinct indices of [0, r), uniform without
///            replacement, sorted; the SAME I_k for A's rows and B's columns.
///            Client k trains A[I_k,:] (m_k,C), B[:,I_k] (O,m_k) at scale s r / m_k: with the sketch
///            S_k = (r/m_k) diag(1[i in I_k]), E[S_k] = I, so E[B S_k A] = B A (unbiased).
/// upload     the trained sub-adapter, m_k (O + C) floats, and I_k (m_k ints), per module
/// aggregate  g = (1/M) sum_k scatter_{I_k}(trained_k - start_k)     (M clients reported)
///            A, B += eta g   (eta = server learning rate, 1 by default)
///            or FedAdam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; A, B += eta m / (sqrt(v) + tau)
/// </code>
/// Under DP (<see cref="AggregatePrivately"/>) each client's contribution is its scattered change,
/// clipped to S, and g = (sum_k clip_S(scatter_{I_k}(trained_k - start_k)) + N(0, (z S)^2)) / M, M the
/// fixed denominator; the server step is the same.
/// </summary>
public sealed class FsLoraStrategy : IFederatedStrategy, IPrivateAggregation
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>FSLoRA over <paramref name="modules"/> with global rank r = <c>settings.Rank</c>.</summary>
    public FsLoraStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings, FsLoraOptions? options = null)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
        Options = options ?? new FsLoraOptions();
        if (!double.IsFinite(Options.ServerLearningRate) || Options.ServerLearningRate <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), Options.ServerLearningRate, "the server learning rate must be finite and > 0");
        }
        if (Options.ServerAdam is { } adam && !(adam.Beta1 >= 0 && adam.Beta1 < 1 && adam.Beta2 >= 0 && adam.Beta2 < 1 && adam.Tau > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(options), adam, "FedAdam needs beta1, beta2 in [0, 1) and tau > 0");
        }
    }

    /// <inheritdoc/>
    public string Name => "fslora";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <summary>Server learning rate and optimizer.</summary>
    public FsLoraOptions Options { get; }

    /// <summary>A fresh rank-r adapter per module (A kaiming-uniform, B zero) and, with FedAdam, zero moments.</summary>
    public GlobalState Initialize(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var adapters = HostAdapter.Fresh(_modules, Settings.Rank, random);
        var adam = Options.ServerAdam is null
            ? null
            : new ServerAdamState(0, _modules.Select(m => HostAdapter.Zero(m, Settings.Rank)).ToArray(), _modules.Select(m => HostAdapter.Zero(m, Settings.Rank)).ToArray());
        return new GlobalState(0, adapters, Settings.Alpha, Settings.Scaling, serverOptimizer: adam);
    }

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var r = Settings.Rank;
        var scale = Settings.Scale;
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            var m = clients[k].Budget.RankFor(r, clients[k].Id);
            var indices = new int[_modules.Length][];
            var starts = new HostAdapter[_modules.Length];
            for (var module = 0; module < _modules.Length; module++)
            {
                indices[module] = DrawIndices(random, r, m);
                starts[module] = LowRank.Gather(state.Adapters[module], indices[module]);
            }
            // Written as AdapterSet.SetSketch computes it (float * int / int), so both sides agree bit for bit.
            var sketchScale = scale * r / m;
            assignments[k] = new ClientAssignment(round, clients[k], m, r, Settings.Alpha, Settings.Scaling, sketchScale, starts,
                TrainableFactors.Both, rankIndices: indices);
        }
        return new RoundPlan(round, assignments);
    }

    /// <inheritdoc/>
    public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var mean = 1.0 / pairs.Length;
        var g = new (double[] A, double[] B)[_modules.Length];
        for (var module = 0; module < _modules.Length; module++)
        {
            var sum = new AdapterAccumulator(_modules[module], Settings.Rank);
            foreach (var (assignment, update) in pairs)
            {
                var indices = assignment.RankIndices![module];
                var start = assignment.Start[module];
                sum.AddScattered(update.Modules[module].A!, update.Modules[module].B, indices, mean);
                sum.AddScattered(start.A, start.B, indices, -mean);
            }
            g[module] = (sum.A, sum.B);
        }
        return ServerStep(state, g);
    }

    /// <summary>The server step on g = (sum_k clip_S(scatter_{I_k}(trained_k - start_k)) + N(0, (z S)^2)) / M.</summary>
    public AggregationResult AggregatePrivately(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var g = PrivateAggregation.NoisedMeanChange(_modules, Settings.Rank, trainsA: true, pairs, sum);
        return ServerStep(state, g.Select(change => (change.A!, change.B)).ToArray());
    }

    /// <summary>A, B += eta g per module, or FedAdam's step on g.</summary>
    private AggregationResult ServerStep(GlobalState state, (double[] A, double[] B)[] g)
    {
        var adapters = new HostAdapter[_modules.Length];
        var first = new HostAdapter[_modules.Length];
        var second = new HostAdapter[_modules.Length];
        for (var module = 0; module < _modules.Length; module++)
        {
            var current = state.Adapters[module];
            if (state.ServerOptimizer is { } moments)
            {
                var adam = Options.ServerAdam!;
                (adapters[module], first[module], second[module]) = FedAdamStep(current, g[module], moments.FirstMoment[module], moments.SecondMoment[module], adam);
            }
            else
            {
                adapters[module] = SgdStep(current, g[module]);
            }
        }
        var optimizer = state.ServerOptimizer is null ? null : new ServerAdamState(state.ServerOptimizer.Step + 1, first, second);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling, serverOptimizer: optimizer));
    }

    /// <summary>m distinct indices of [0, rank), uniform without replacement (partial Fisher-Yates), sorted.</summary>
    internal static int[] DrawIndices(Random random, int rank, int count)
    {
        var pool = new int[rank];
        for (var i = 0; i < rank; i++) pool[i] = i;
        for (var i = 0; i < count; i++)
        {
            var j = random.Next(i, rank);
            (pool[i], pool[j]) = (pool[j], pool[i]);
        }
        var chosen = pool[..count];
        Array.Sort(chosen);
        return chosen;
    }

    private HostAdapter SgdStep(HostAdapter current, (double[] A, double[] B) g)
    {
        var eta = Options.ServerLearningRate;
        var a = new float[current.A.Length];
        var b = new float[current.B.Length];
        for (var i = 0; i < a.Length; i++) a[i] = (float)(current.A[i] + eta * g.A[i]);
        for (var i = 0; i < b.Length; i++) b[i] = (float)(current.B[i] + eta * g.B[i]);
        return new HostAdapter(current.Module, current.Rank, a, b);
    }

    private (HostAdapter Next, HostAdapter First, HostAdapter Second) FedAdamStep(HostAdapter current, (double[] A, double[] B) g,
        HostAdapter first, HostAdapter second, FedAdamOptions adam)
    {
        var next = HostAdapter.Zero(current.Module, current.Rank);
        var nextFirst = HostAdapter.Zero(current.Module, current.Rank);
        var nextSecond = HostAdapter.Zero(current.Module, current.Rank);
        Step(current.A, g.A, first.A, second.A, next.A, nextFirst.A, nextSecond.A);
        Step(current.B, g.B, first.B, second.B, next.B, nextFirst.B, nextSecond.B);
        return (next, nextFirst, nextSecond);

        void Step(float[] x, double[] gradient, float[] m, float[] v, float[] xNext, float[] mNext, float[] vNext)
        {
            for (var i = 0; i < x.Length; i++)
            {
                var mi = adam.Beta1 * m[i] + (1 - adam.Beta1) * gradient[i];
                var vi = adam.Beta2 * v[i] + (1 - adam.Beta2) * gradient[i] * gradient[i];
                mNext[i] = (float)mi;
                vNext[i] = (float)vi;
                xNext[i] = (float)(x[i] + Options.ServerLearningRate * mi / (Math.Sqrt(vi) + adam.Tau));
            }
        }
    }
}

/// <summary>FSLoRA's server side.</summary>
/// <param name="ServerLearningRate">eta in A, B += eta g (1: apply the mean change as is).</param>
/// <param name="ServerAdam">When set, a FedAdam step on g instead of plain addition.</param>
public sealed record FsLoraOptions(double ServerLearningRate = 1, FedAdamOptions? ServerAdam = null);

/// <summary>
/// FedAdam (Reddi et al., 2021, "Adaptive Federated Optimization"), treating the mean client change g
/// as a descent direction: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; x += eta m / (sqrt(v) + tau);
/// no bias correction, as in the paper.
/// </summary>
/// <param name="Beta1">b1 in [0, 1).</param>
/// <param name="Beta2">b2 in [0, 1).</param>
/// <param name="Tau">tau > 0, the adaptivity floor.</param>
public sealed record FedAdamOptions(double Beta1 = 0.9, double Beta2 = 0.99, double Tau = 1e-3);
