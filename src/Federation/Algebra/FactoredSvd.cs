using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.LinearAlgebra.Factorization;

namespace FedLora.Federation;

/// <summary>
/// The thin SVD of a product given in factored form, P = B diag(w) A with B (O,R), A (R,C), w (R):
/// P = U diag(sigma) V^T, U (O,K), V (C,K), K = min(R, O, C), sigma descending. In double precision.
/// </summary>
/// <remarks>
/// When R &lt; min(O, C) the (O,C) matrix is never formed: with thin QRs B = Q_B R_B (Q_B (O,R),
/// R_B (R,R)) and A^T = Q_A R_A (Q_A (C,R), R_A (R,R)),
/// <code>P = Q_B (R_B diag(w) R_A^T) Q_A^T</code>
/// so the SVD of the (R,R) core, U_c S V_c^T, gives U = Q_B U_c and V = Q_A V_c: O(R^2 (O + C) + R^3)
/// work instead of O(O C min(O, C)). Otherwise P is formed and decomposed directly.
/// </remarks>
internal static class FactoredSvd
{
    /// <summary>U (O,K) and V (C,K) row-major, sigma (K).</summary>
    internal sealed record Result(int OutFeatures, int InFeatures, int Rank, double[] U, double[] Sigma, double[] V);

    public static Result Compute(int o, int c, int rank, float[] b, float[] a, float[] rowWeights) =>
        rank < Math.Min(o, c) ? ViaQr(o, c, rank, b, a, rowWeights) : Dense(o, c, rank, b, a, rowWeights);

    public static Result ViaQr(int o, int c, int rank, float[] b, float[] a, float[] rowWeights)
    {
        if (rank > Math.Min(o, c)) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the QR path needs R <= min(O, C) = {Math.Min(o, c)}");
        if (rank == 0) return new Result(o, c, 0, [], [], []);
        var stackedB = Matrix<double>.Build.Dense(o, rank, (i, j) => b[i * rank + j]);
        var stackedAt = Matrix<double>.Build.Dense(c, rank, (i, j) => a[j * c + i]);
        var qrB = stackedB.QR(QRMethod.Thin);
        var qrA = stackedAt.QR(QRMethod.Thin);
        var core = qrB.R * Matrix<double>.Build.DiagonalOfDiagonalArray(Array.ConvertAll(rowWeights, w => (double)w)) * qrA.R.Transpose();
        var svd = core.Svd(computeVectors: true);
        var u = qrB.Q * svd.U;
        var v = qrA.Q * svd.VT.Transpose();
        return Pack(o, c, rank, u, svd.S.ToArray(), v);
    }

    public static Result Dense(int o, int c, int rank, float[] b, float[] a, float[] rowWeights)
    {
        var k = Math.Min(rank, Math.Min(o, c));
        if (k == 0) return new Result(o, c, 0, [], [], []);
        var product = Matrix<double>.Build.Dense(o, c);
        for (var i = 0; i < o; i++)
        {
            for (var j = 0; j < rank; j++)
            {
                var coefficient = (double)b[i * rank + j] * rowWeights[j];
                if (coefficient == 0) continue;
                for (var col = 0; col < c; col++) product[i, col] += coefficient * a[j * c + col];
            }
        }
        var svd = product.Svd(computeVectors: true);
        return Pack(o, c, k, svd.U, svd.S.ToArray(), svd.VT.Transpose());
    }

    /// <summary>The SVD of the dense <paramref name="product"/> (O,C) row-major, truncated to its <paramref name="rank"/> largest singular values (rank &lt;= min(O, C)).</summary>
    public static Result OfDense(int o, int c, double[] product, int rank)
    {
        if (rank < 0 || rank > Math.Min(o, c)) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"a truncated SVD of an ({o},{c}) matrix keeps between 0 and {Math.Min(o, c)} ranks");
        if (rank == 0) return new Result(o, c, 0, [], [], []);
        var svd = Matrix<double>.Build.Dense(o, c, (i, j) => product[i * c + j]).Svd(computeVectors: true);
        return Pack(o, c, rank, svd.U, svd.S.ToArray(), svd.VT.Transpose());
    }

    private static Result Pack(int o, int c, int k, Matrix<double> u, double[] sigma, Matrix<double> v)
    {
        var packedU = new double[o * k];
        var packedV = new double[c * k];
        for (var i = 0; i < o; i++)
        {
            for (var j = 0; j < k; j++) packedU[i * k + j] = u[i, j];
        }
        for (var i = 0; i < c; i++)
        {
            for (var j = 0; j < k; j++) packedV[i * k + j] = v[i, j];
        }
        return new Result(o, c, k, packedU, sigma.AsSpan(0, k).ToArray(), packedV);
    }
}
