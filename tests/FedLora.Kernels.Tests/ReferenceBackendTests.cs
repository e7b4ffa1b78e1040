using FedLora.Kernels.Reference;

namespace FedLora.Kernels.Tests;

/// <summary>The reference itself, checked on values computed by hand.</summary>
public sealed class ReferenceBackendTests : IDisposable
{
    private readonly ReferenceBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    private BufferView Make(params float[] values)
    {
        var buffer = _backend.Allocate(values.Length);
        _backend.Upload(values, buffer);
        return buffer;
    }

    [Fact]
    public void MatmulForward_TwoByTwo_MatchesHandComputation()
    {
        // x = [[1,2],[3,4]], W = [[1,0],[1,1],[0,2]], b = [1,2,3] -> x W^T + b = [[2,5,7],[4,9,11]].
        var x = Make(1, 2, 3, 4);
        var w = Make(1, 0, 1, 1, 0, 2);
        var b = Make(1, 2, 3);
        var y = Make(new float[6]);
        _backend.MatmulForward(2, 2, 3, x, w, b, y);
        Assert.Equal([2f, 5, 7, 4, 9, 11], _backend.ToArray(y));
    }

    [Fact]
    public void LowRankMatmulForward_IndexSet_UsesOnlySelectedRanks()
    {
        // x = [1,2]; W = 0; A = [[1,0],[0,1],[1,1]] (r=3); B = [[1,10,100]] (O=1); I = {2,0}; s = 2.
        // t = x A_I^T = [x.A2, x.A0] = [3, 1]; y = s t B_I^T = 2 (3*100 + 1*1) = 602.
        var x = Make(1, 2);
        var w = Make(0, 0);
        var a = Make(1, 0, 0, 1, 1, 1);
        var bl = Make(1, 10, 100);
        var t = Make(0, 0);
        var y = Make(0);
        _backend.LowRankMatmulForward(1, 2, 1, 3, x, w, null, a, bl, 2f, [2, 0], t, y);
        Assert.Equal([3f, 1], _backend.ToArray(t));
        Assert.Equal([602f], _backend.ToArray(y));
    }

    [Fact]
    public void GeluForward_KnownValues_MatchTanhApproximation()
    {
        var x = Make(0, 1, -1, 3);
        var y = Make(new float[4]);
        _backend.GeluForward(x, y);
        // 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) at 1: 0.841192; at -1: -0.158808; at 3: 2.996363.
        var result = _backend.ToArray(y);
        Assert.Equal(0f, result[0]);
        Assert.Equal(0.841192f, result[1], 5);
        Assert.Equal(-0.158808f, result[2], 5);
        Assert.Equal(2.996363f, result[3], 5);
    }

    [Fact]
    public void CrossEntropyForward_UniformLogits_GiveLogVocab()
    {
        var logits = Make(0, 0, 0, 0, 5, 1, 1, 1);
        var probs = Make(new float[8]);
        var losses = Make(0, 0);
        _backend.CrossEntropyForward(2, 4, logits, [3, -1], probs, losses);
        var loss = _backend.ToArray(losses);
        Assert.Equal(Math.Log(4), loss[0], 6);
        Assert.Equal(0f, loss[1]);
        Assert.Equal(0.25f, _backend.ToArray(probs)[0], 6);
    }

    [Fact]
    public void StackedAggregation_TwoClients_EqualsSumOfWeightedProducts()
    {
        // Client 1: B1 = [[1],[2]] (O=2, r=1), A1 = [[1,1]]; client 2: B2 = [[1,0],[0,1]], A2 = I.
        // W += 0.5 B1 A1 + 2 B2 A2 = 0.5 [[1,1],[2,2]] + 2 I = [[2.5,0.5],[1,3]].
        var stackedB = Make(1, 1, 0, 2, 0, 1);
        var stackedA = Make(1, 1, 1, 0, 0, 1);
        var w = Make(0, 0, 0, 0);
        _backend.StackedAggregation(2, 2, 3, stackedB, stackedA, [0.5f, 2f, 2f], w);
        Assert.Equal([2.5f, 0.5f, 1f, 3f], _backend.ToArray(w));
    }
}
