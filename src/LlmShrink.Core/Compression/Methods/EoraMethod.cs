using LlmShrink.Compression.LowRank;
using LlmShrink.Compression.Recipes;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// EoRA (Liu et al. 2024, "EoRA: Training-free Compensation for Compressed LLM with Eigenspace Low-Rank Approximation",
/// §3): after an earlier modifier compressed a layer to Ŵ, the residual ΔW = W − Ŵ (W the float weights that modifier
/// started from) is approximated by a rank-r product B·A, and the layer runs as Ŵx + B·A·x. What matters is the output
/// error ‖(ΔW − B·A)X‖_F on the calibration inputs, not ‖ΔW − B·A‖_F: EoRA projects ΔW into the eigenspace of
/// XXᵀ = QΛQᵀ, truncates the SVD of ΔW·QΛ^½ and maps the right factor back through (QΛ^½)⁻¹. Any T with TTᵀ = XXᵀ gives
/// the same optimum, since ‖M·T‖_F² = tr(M·XXᵀ·Mᵀ) = ‖M·X‖_F² for every M: so the Cholesky factor L of XXᵀ that SVD-LLM
/// whitens with (<see cref="InputTransform.Whitening"/>) is used here, and by Eckart–Young the truncation to rank r is the
/// best rank-r B·A in ‖(ΔW − B·A)X‖_F, its loss exactly the dropped σᵢ² of ΔW·L (<see cref="WeightSpectrum"/>).
/// Keys: <c>rank</c> (1 … min(m, n)), <c>dtype</c> (f16 | bf16 | f32 of the stored factors; by default the checkpoint's
/// 16-bit type, F16 for a float32 checkpoint), <c>dampening</c> (λ/mean(diag H) added before the factorization, default 1e-6).
/// </summary>
public sealed class EoraMethod(EoraParameters parameters) : ICompressionMethod
{
    public string Name => "eora";
    public StatisticsNeeds Needs => StatisticsNeeds.Hessian;

    public static ICompressionMethod FromRecipe(RecipeParameters p) => new EoraMethod(EoraParameters.Read(p));

    public void CompressBlock(BlockCompression block)
    {
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            if (parameters.Rank > Math.Min(rows, columns))
                throw new ShrinkException($"{Name}: rank {parameters.Rank} is larger than min(m, n) = {Math.Min(rows, columns)} of {LinearRoles.ModulePath(block.Layer, role)} [{rows}, {columns}]");
            var (layer, before) = block.Compressed(role);
            var residual = new float[before.Length]; // ΔW = W − Ŵ
            System.Numerics.Tensors.TensorPrimitives.Subtract(before, layer.Dequantize(), residual);
            var whitening = InputTransform.Whitening(block.Statistics(LinearRoles.Site(role)).Hessian(), columns, parameters.Dampening);
            var factors = WeightSpectrum.Of(residual, rows, columns, whitening).Truncate(parameters.Rank);
            var source = block.SourceType(role);
            block.SetCompensation(role, factors, parameters.StoredType ?? (source is TensorType.F16 or TensorType.BF16 ? source : TensorType.F16));
        }
    }
}

/// <summary>The keys of <c>eora</c>: <c>rank</c> (required, ≥ 1), <c>dtype</c> (f16 | bf16 | f32), <c>dampening</c> (default 1e-6, as svd-llm's).</summary>
public sealed record EoraParameters(int Rank, TensorType? StoredType, double Dampening)
{
    public static EoraParameters Read(RecipeParameters p)
    {
        ShrinkException Bad(string message) => ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': {message}");
        if (!p.Has("rank")) throw Bad("rank is required (the compensation's rank r, e.g. 32)");
        int rank = p.Int("rank", 0);
        if (rank <= 0) throw Bad($"rank: {rank} must be positive");
        TensorType? type = p.Has("dtype") ? p.String("dtype", "", "f16", "bf16", "f32") switch { "f16" => TensorType.F16, "bf16" => TensorType.BF16, _ => TensorType.F32 } : null;
        return new EoraParameters(rank, type, p.Double("dampening", 1e-6, 0, 1));
    }
}
