using LlmShrink.Compression.LowRank;
using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Compression.Methods;

/// <summary>The coordinates a low-rank method truncates in (<see cref="InputTransform"/>).</summary>
public enum LowRankKind
{
    /// <summary><c>svd</c>: the weight itself, T = I.</summary>
    Svd,
    /// <summary><c>asvd</c> (Yuan et al. 2023, §3.2): T = diag(mean|x_j|)^α, so channels that carry large activations are kept first.</summary>
    Asvd,
    /// <summary><c>svd-llm</c> (Wang et al. 2024, §3.1): T = chol(XXᵀ), so each dropped singular value is exactly its output loss.</summary>
    SvdLlm,
    /// <summary>
    /// <c>fwsvd</c> (Hsu et al. 2022): T = I with the output rows weighted by D = diag(√I_i), I_i the Fisher information of
    /// row i (<see cref="Training.FisherInformation"/>), so the rows the loss is most sensitive to are kept first.
    /// </summary>
    Fwsvd,
}

/// <summary>
/// Replaces each targeted linear by two factors U·V (<see cref="LowRankFactors"/>) from the truncated SVD of D·W·T
/// (<see cref="WeightSpectrum"/>). The rank comes from <c>rank</c> (explicit) or <c>ratio</c> (the fraction of the
/// parameters removed); with <c>allocation: spectrum</c> the block's targets share one budget of (1 − ratio)·Σ mn values,
/// spent where the transformed spectra say it removes the most relative error (<see cref="RankAllocation.FromSpectra"/>);
/// with <c>allocation: loss</c> (svd-llm) the matrices of each type share one budget across depths, split by their
/// whitened truncation losses on the float model (SVD-LLM V2, <see cref="RankAllocation.FromLosses"/>), which a survey of
/// the whole model measures before the first block is compressed. fwsvd's survey is the Fisher information. A rank that
/// does not pay (r ≥ mn/(m + n)) leaves the layer dense, and its report line says so. The factors are stored in
/// <c>dtype</c>: by default the checkpoint's own 16-bit type, F16 for a float32 checkpoint — or, with <c>bits</c> (and
/// <c>group_size</c>, <c>symmetric</c>, as for GPTQ), quantized themselves (<see cref="QuantizedFactors"/>).
/// </summary>
public sealed class LowRankMethod(LowRankKind kind, LowRankParameters parameters) : ICompressionMethod
{
    // What the survey of this run found: fwsvd's Fisher information, or the ranks allocation: loss chose by (block, role).
    private Training.FisherInformation? _fisher;
    private Dictionary<(int Layer, LinearRole Role), int>? _allocated;

    public string Name => kind switch { LowRankKind.Svd => "svd", LowRankKind.Asvd => "asvd", LowRankKind.Fwsvd => "fwsvd", _ => "svd-llm" };
    public StatisticsNeeds Needs => (parameters.FactorScheme is null ? StatisticsNeeds.None : StatisticsNeeds.Hessian) | kind switch
    {
        LowRankKind.Asvd => StatisticsNeeds.ChannelMagnitudes,
        LowRankKind.SvdLlm => StatisticsNeeds.Hessian,
        _ => StatisticsNeeds.None,
    };

    public bool SurveysModel => kind == LowRankKind.Fwsvd || parameters.Allocation == RankAllocationKind.Loss;

    public static Func<RecipeParameters, ICompressionMethod> FromRecipe(LowRankKind kind) =>
        p => new LowRankMethod(kind, LowRankParameters.Read(p, kind));

    public void Survey(ModelSurvey survey)
    {
        if (kind == LowRankKind.Fwsvd) _fisher = survey.Fisher(parameters.FisherSample);
        if (parameters.Allocation == RankAllocationKind.Loss) _allocated = LossAllocation.Ranks(survey, parameters.Ratio!.Value, parameters.Dampening);
    }

    public void CompressBlock(BlockCompression block)
    {
        if (kind == LowRankKind.Fwsvd && _fisher is null || parameters.Allocation == RankAllocationKind.Loss && _allocated is null)
            throw new ShrinkException($"{Name}: {(kind == LowRankKind.Fwsvd ? "the Fisher information" : "allocation: loss")} needs a survey of the whole model " +
                "before the first block, which only the compression pipeline takes (the planner measures one layer group at a time)");
        var targets = block.Targets;
        foreach (var role in targets)
        {
            var (rows, columns) = block.Shape(role);
            if (parameters.Rank is { } r && r > Math.Min(rows, columns))
                throw new ShrinkException($"{Name}: rank {r} is larger than min(m, n) = {Math.Min(rows, columns)} of {LinearRoles.ModulePath(block.Layer, role)} [{rows}, {columns}]");
        }
        if (parameters.Allocation == RankAllocationKind.Spectrum)
        {
            var spectra = targets.Select(role => Spectrum(block, role)).ToList();
            var ranks = RankAllocation.FromSpectra(spectra, parameters.Ratio!.Value);
            for (int i = 0; i < targets.Count; i++)
            {
                var spectrum = spectra[i];
                if (ranks[i] is { } rank) StoreIfItPays(block, targets[i], rank, () => spectrum);
                else block.KeepDense(targets[i], "the block's budget keeps it whole");
            }
            return;
        }
        foreach (var role in targets)
        {
            var (rows, columns) = block.Shape(role);
            // A matrix the loss survey did not see (lm_head, alone of its type) keeps the uniform ratio, as a group of one would.
            int rank = parameters.Rank ?? (_allocated is not null && _allocated.TryGetValue((block.Layer, role), out int allocated) ? allocated
                : RankAllocation.Uniform(rows, columns, parameters.Ratio!.Value));
            StoreIfItPays(block, role, rank, () => Spectrum(block, role));
        }
    }

    private void StoreIfItPays(BlockCompression block, LinearRole role, int rank, Func<WeightSpectrum> spectrum)
    {
        var (rows, columns) = block.Shape(role);
        if (parameters.FactorScheme is { } scheme) rank = WholeGroups(rank, scheme);
        if (!LowRankFactors.Pays(rank, rows, columns))
        {
            block.KeepDense(role, $"rank {rank} ≥ mn/(m + n) = {LowRankFactors.BreakEvenRank(rows, columns):0.#} would store more than the matrix");
            return;
        }
        Store(block, role, spectrum(), rank);
    }

    private void Store(BlockCompression block, LinearRole role, WeightSpectrum spectrum, int rank)
    {
        var factors = spectrum.Truncate(rank);
        if (parameters.FactorScheme is { } scheme)
        {
            var (u, v) = QuantizedFactors.Quantize(block.Weights(role), factors, block.Statistics(LinearRoles.Site(role)).Hessian(), scheme, new GptqOptions());
            block.SetLowRank(role, new QuantizedLayer(block.Layer, role, u, null), new QuantizedLayer(block.Layer, role, v, null));
            return;
        }
        var source = block.SourceType(role);
        var type = parameters.StoredType ?? (source is TensorType.F16 or TensorType.BF16 ? source : TensorType.F16);
        var dense = LowRankLayer.Dense(block.Layer, role, factors, type, null);
        block.SetLowRank(role, dense.UFactor, dense.VFactor);
    }

    /// <summary>
    /// Quantized factors need whole groups along U's inputs, which are the rank (the GPTQ layout states a group width of
    /// in / groups): the rank is rounded to the nearest multiple of the group width (32 for per-channel grids, whose 4-bit
    /// codes pack 8 to a word), at least one group.
    /// </summary>
    private static int WholeGroups(int rank, QuantScheme scheme)
    {
        int width = scheme.Granularity == QuantGranularity.PerGroup ? scheme.GroupSize : 32;
        return Math.Max(width, (int)Math.Round((double)rank / width, MidpointRounding.AwayFromZero) * width);
    }

    private WeightSpectrum Spectrum(BlockCompression block, LinearRole role)
    {
        var (rows, columns) = block.Shape(role);
        var site = LinearRoles.Site(role);
        InputTransform transform = kind switch
        {
            LowRankKind.Svd => InputTransform.Identity(columns),
            LowRankKind.Asvd => InputTransform.Diagonal(ActivationScales(block.Statistics(site).AbsMean(), parameters.Alpha)),
            LowRankKind.SvdLlm => block.Statistics(site).Whitening(parameters.Dampening),
            _ => InputTransform.Identity(columns),
        };
        var rowScale = kind == LowRankKind.Fwsvd ? FisherScales(_fisher!.Rows(block.Layer, role)) : null;
        return WeightSpectrum.Of(block.Weights(role), rows, columns, transform, rowScale: rowScale);
    }

    /// <summary>
    /// FWSVD's row weights d_i = √I_i. A row whose gradient was zero on every calibration sequence takes the smallest
    /// nonzero row's weight, so D stays invertible and such rows are simply fitted least (as ASVD treats dead channels).
    /// </summary>
    public static double[] FisherScales(double[] fisher)
    {
        double floor = fisher.Where(f => f > 0 && double.IsFinite(f)).DefaultIfEmpty(1).Min();
        return Array.ConvertAll(fisher, f => Math.Sqrt(f > 0 && double.IsFinite(f) ? f : floor));
    }

    /// <summary>
    /// ASVD's S_jj = (mean|x_j|)^α. A channel never active in calibration gets the smallest active channel's scale, so
    /// S stays invertible and such channels are simply weighted least.
    /// </summary>
    public static double[] ActivationScales(float[] absMean, double alpha)
    {
        double floor = absMean.Where(a => a > 0).DefaultIfEmpty(1f).Min();
        return Array.ConvertAll(absMean, a => Math.Pow(a > 0 ? a : floor, alpha));
    }
}

/// <summary>
/// Whether a low-rank method's ratio applies to each matrix alike, to the block's targets together (spectrum), or to
/// each layer type across depths by truncation loss (loss: SVD-LLM V2).
/// </summary>
public enum RankAllocationKind { Uniform, Spectrum, Loss }

/// <summary>
/// The keys of the low-rank methods: <c>ratio</c> in (0, 1) or <c>rank</c> ≥ 1 (one of them), <c>allocation</c>
/// (uniform | spectrum | loss; both share a budget, so they need a ratio; loss is svd-llm's), <c>dtype</c> (f16 | bf16 | f32) of the stored factors, and per method
/// <c>alpha</c> (asvd, default 0.5 as in the paper), <c>fisher</c> (fwsvd: token | sequence, what one squared gradient
/// is taken over, <see cref="Training.FisherSample"/>; default token, measured better) and <c>dampening</c> (svd-llm: λ/mean(diag H) added before the
/// Cholesky factorization, default 1e-6; raised tenfold while XXᵀ stays singular); <c>bits</c> (4 or 8), <c>group_size</c>,
/// <c>symmetric</c> quantize the factors.
/// </summary>
public sealed record LowRankParameters(double? Ratio, int? Rank, RankAllocationKind Allocation, TensorType? StoredType, double Alpha, double Dampening,
    QuantScheme? FactorScheme, Training.FisherSample FisherSample)
{
    /// <summary>svd-llm's default relative dampening of XXᵀ before its Cholesky factorization.</summary>
    public const double DefaultDampening = 1e-6;

    public static LowRankParameters Read(RecipeParameters p, LowRankKind kind)
    {
        ShrinkException Bad(string message) => ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': {message}");
        double? ratio = p.Has("ratio") ? p.Double("ratio", 0, double.MinValue, double.MaxValue) : null;
        int? rank = p.Has("rank") ? p.Int("rank", 0) : null;
        if (ratio is null == rank is null) throw Bad("give either ratio (the fraction of parameters removed) or rank");
        if (ratio is { } r && !(r > 0 && r < 1)) throw Bad($"ratio: {r} is outside (0, 1)");
        if (rank is <= 0) throw Bad($"rank: {rank} must be positive");
        string allocationName = p.String("allocation", "uniform", "uniform", "spectrum", "loss");
        var allocation = allocationName switch { "spectrum" => RankAllocationKind.Spectrum, "loss" => RankAllocationKind.Loss, _ => RankAllocationKind.Uniform };
        if (allocation != RankAllocationKind.Uniform && ratio is null) throw Bad($"allocation: {allocationName} shares a parameter budget: give ratio, not rank");
        if (allocation == RankAllocationKind.Loss && kind != LowRankKind.SvdLlm)
            throw Bad("allocation: loss compares whitened truncation losses (SVD-LLM V2): svd-llm only");
        TensorType? type = p.Has("dtype") ? p.String("dtype", "", "f16", "bf16", "f32") switch { "f16" => TensorType.F16, "bf16" => TensorType.BF16, _ => TensorType.F32 } : null;
        double alpha = kind == LowRankKind.Asvd ? p.Double("alpha", 0.5, 0, 4) : 0;
        double dampening = kind == LowRankKind.SvdLlm ? p.Double("dampening", DefaultDampening, 0, 1) : 0;
        var fisher = kind == LowRankKind.Fwsvd && p.String("fisher", "token", "token", "sequence") == "sequence" ? Training.FisherSample.Sequence : Training.FisherSample.Token;
        var scheme = p.Has("bits") ? SchemeParameters.Read(p) : null;
        if (scheme is not null && type is not null) throw Bad("dtype applies to float factors; quantized factors (bits) are stored as GPTQ codes and scales");
        if (scheme is { Bits: not (4 or 8) }) throw Bad($"bits: factors are quantized to 4 or 8 bits, not {scheme.Bits}");
        return new LowRankParameters(ratio, rank, allocation, type, alpha, dampening, scheme, fisher);
    }
}
