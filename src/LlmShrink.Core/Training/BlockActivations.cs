namespace LlmShrink.Training;

/// <summary>
/// What the forward pass of one block keeps for its backward pass (besides the block's input, which the model keeps),
/// for N = batch·seqLen tokens, row-major [N, width] (the inference layouts): the attention norm's output and 1/rms per row,
/// q and k after RoPE (before it as well, and the per-head 1/rms, with qwen3's q/k norms), v, the attention
/// probabilities [batch, heads, T, T], the attention output before o_proj, the residual after attention, the MLP
/// norm's output and 1/rms, gate and up before SwiGLU, and SwiGLU's output.
/// </summary>
public sealed class BlockActivations
{
    public float[] Norm1, Rstd1, Q, K, V, Probabilities, Attention, Mid, Norm2, Rstd2, Gate, Up, Act;
    /// <summary>q and k before the per-head norm, and its 1/rms per head (qwen3); empty otherwise.</summary>
    public float[] QRaw = [], KRaw = [], QRstd = [], KRstd = [];

    public BlockActivations(int n, int d, int qDim, int kvDim, int ffn, int probabilities, int heads, int kvHeads, bool qkNorm)
    {
        Norm1 = new float[n * d]; Rstd1 = new float[n];
        Q = new float[n * qDim]; K = new float[n * kvDim]; V = new float[n * kvDim];
        Probabilities = new float[probabilities]; Attention = new float[n * qDim];
        Mid = new float[n * d]; Norm2 = new float[n * d]; Rstd2 = new float[n];
        Gate = new float[n * ffn]; Up = new float[n * ffn]; Act = new float[n * ffn];
        if (qkNorm)
        {
            QRaw = new float[n * qDim]; KRaw = new float[n * kvDim];
            QRstd = new float[n * heads]; KRstd = new float[n * kvHeads];
        }
    }

    public long Floats => new[] { Norm1, Rstd1, Q, K, V, Probabilities, Attention, Mid, Norm2, Rstd2, Gate, Up, Act, QRaw, KRaw, QRstd, KRstd }.Sum(a => (long)a.Length);
}
