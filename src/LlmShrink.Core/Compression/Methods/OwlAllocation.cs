using LlmShrink.Compression.Pruning;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// OWL's per-block sparsities for one pipeline run (Yin et al. 2023): every targeted block's outlier ratio D_l is
/// measured on the uncompressed model, as the paper does before pruning anything — which the sequential pipeline allows only
/// through a survey of the whole model before its first block (<see cref="ModelSurvey.ForEachBlock"/>) — then
/// <see cref="OutlierWeightedSparsity.Allocate"/> turns the ratios into sparsities S_l averaging the recipe's S, lower where
/// outliers are denser. D_l pools the block's targeted linears under one mean (<see cref="OutlierWeightedSparsity.OutlierRatio"/>)
/// and counts Wanda scores |W_ij|·‖X_j‖₂ on the float model's calibration activations whichever method then prunes: the
/// outliers OWL protects are the activations' outlier features, which |W| alone cannot see, and the paper's reference
/// code allocates SparseGPT's and magnitude pruning's sparsities by the same Wanda-score ratios. So magnitude with OWL reads
/// calibration data for its allocation, while each block's weights are still ranked by |W| alone.
/// The mean over blocks is S; for blocks of equal size (every model the paper prunes) so is the model's overall sparsity.
/// </summary>
public sealed class OwlAllocation
{
    /// <summary>D_l of every targeted block, by block index.</summary>
    public IReadOnlyDictionary<int, double> OutlierRatios { get; }
    /// <summary>S_l of every targeted block, by block index.</summary>
    public IReadOnlyDictionary<int, double> Sparsities { get; }

    private OwlAllocation(IReadOnlyDictionary<int, double> outlierRatios, IReadOnlyDictionary<int, double> sparsities)
    {
        OutlierRatios = outlierRatios;
        Sparsities = sparsities;
    }

    public static OwlAllocation Measure(ModelSurvey survey, PruningParameters pruning)
    {
        var owl = pruning.Owl ?? throw new ArgumentException("the pruning parameters have no OWL allocation", nameof(pruning));
        var ratios = new Dictionary<int, double>();
        survey.ForEachBlock(StatisticsNeeds.None, block =>
        {
            var matrices = block.Targets.Select(role =>
            {
                var (rows, columns) = block.Shape(role);
                // ‖X_j‖₂ up to the factor √tokens, common to every site of the block (each sees every calibration token).
                var norms = block.Statistics(LinearRoles.Site(role)).SquareMean().Select(MathF.Sqrt).ToArray();
                return (block.Weights(role), rows, columns, norms);
            }).ToList();
            ratios[block.Layer] = OutlierWeightedSparsity.OutlierRatio(matrices, owl.M);
        });
        var layers = ratios.Keys.Order().ToList();
        var sparsities = OutlierWeightedSparsity.Allocate([.. layers.Select(l => ratios[l])], pruning.Sparsity, owl.Lambda);
        return new OwlAllocation(ratios, layers.Select((l, i) => (l, sparsities[i])).ToDictionary(x => x.l, x => x.Item2));
    }
}
