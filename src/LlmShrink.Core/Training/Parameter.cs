namespace LlmShrink.Training;

/// <summary>
/// One trainable tensor: float32 values and the gradient beside them in the same row-major layout ([out, in] for a
/// linear weight, as checkpoints store it), named by its canonical tensor name (<see cref="Model.TensorNames"/>).
/// Backward passes add into <see cref="Grad"/>; <see cref="ZeroGrad"/> starts a new accumulation.
/// <para>A <see cref="Mask"/> makes the tensor masked-sparse (a pruned layer): the forward pass computes with W ⊙ M,
/// the gradient is (∂L/∂W) ⊙ M, and the values under a zero of the mask are exactly zero and stay so (AdamW moves a
/// weight only by its gradient's moments and by decay proportional to the weight itself, both zero there).</para>
/// <para>A <see cref="Quantization"/> makes it fake-quantized (a quantized layer): <see cref="Value"/> is the latent
/// weight in steps of the grid, the forward pass computes with its grid's Ŵ, and the grid's scales (and zero points) are
/// parameters of their own.</para>
/// <para>A <see cref="Frozen"/> tensor does not train: backward passes skip its gradient, so it never allocates
/// <see cref="Grad"/> (and the optimizer, which sees only <see cref="TrainableModel.Trainable"/>, keeps no moments for
/// it) — what makes LoRA cheap in memory. An <see cref="Adapter"/> adds a trainable low-rank term s·B·A to a frozen
/// weight (LoRA); a <see cref="Factored"/> tensor has no stored value and computes with its adapter's product alone (a
/// low-rank student's layer).</para>
/// </summary>
public sealed class Parameter
{
    public string Name { get; }
    /// <summary>[rows, columns] for a matrix, [length] for a vector.</summary>
    public int[] Shape { get; }
    public float[] Value { get; }
    /// <summary>∂L/∂Value, allocated at first use (a <see cref="Frozen"/> tensor's backward never uses it).</summary>
    public float[] Grad => _grad ??= new float[Value.Length];
    private float[]? _grad;
    /// <summary>1 where the weight trains, 0 where it is pruned (held at zero); null for a dense tensor.</summary>
    public byte[]? Mask { get; private set; }
    /// <summary>The grid the forward pass rounds <see cref="Value"/> onto; null for a float tensor.</summary>
    public FakeQuantization? Quantization { get; private set; }

    public Parameter(string name, float[] value, params int[] shape)
    {
        if (value.Length != shape.Aggregate(1L, (a, b) => a * b))
            throw new ArgumentException($"{name}: {value.Length} values for shape [{string.Join(", ", shape)}]", nameof(value));
        Name = name;
        Shape = shape;
        Value = value;
    }

    /// <summary>Whether the tensor is held fixed: no gradient is computed for it (<see cref="GradTarget"/>).</summary>
    public bool Frozen { get; private set; }

    /// <summary>Where a backward pass adds this tensor's gradient: <see cref="Grad"/>, or nowhere (empty) when it is frozen.</summary>
    public Span<float> GradTarget => Frozen ? Span<float>.Empty : Grad;

    /// <summary>The low-rank term this linear weight adds to its output (LoRA beside a frozen weight, or a factored layer's factors), or null.</summary>
    public LowRankAdapter? Adapter { get; private set; }

    /// <summary>False for a <see cref="Factored"/> tensor: the layer computes with its adapter alone, <see cref="Value"/> is empty.</summary>
    public bool HasValue => Value.Length > 0;

    /// <summary>
    /// A linear layer [rows, columns] stored only as the factors of <paramref name="factors"/> (W = s·B·A): its own value is
    /// empty and frozen, the factors train.
    /// </summary>
    public static Parameter Factored(string name, LowRankAdapter factors) =>
        new(name, factors.Rows, factors.Columns) { Frozen = true, Adapter = factors };

    private Parameter(string name, int rows, int columns)
    {
        Name = name;
        Shape = [rows, columns];
        Value = [];
    }

    /// <summary>Holds the tensor fixed from now on (see <see cref="Frozen"/>).</summary>
    public void Freeze() => Frozen = true;

    /// <summary>Freezes this linear weight and adds <paramref name="adapter"/>'s trainable term to it (LoRA); a mask stays and applies to the term too.</summary>
    public void Adapt(LowRankAdapter adapter)
    {
        if (Quantization is not null) throw new InvalidOperationException($"{Name}: a fake-quantized tensor cannot take an adapter");
        if (Adapter is not null) throw new InvalidOperationException($"{Name}: already has an adapter");
        if (Shape.Length != 2 || adapter.Rows != Rows || adapter.Columns != Columns)
            throw new ArgumentException($"{Name}: a [{adapter.Rows}, {adapter.Columns}] adapter for shape [{string.Join(", ", Shape)}]", nameof(adapter));
        Adapter = adapter;
        Frozen = true;
    }

    /// <summary>
    /// This tensor's learning rate as a multiple of the schedule's (<see cref="AdamW.Update"/>): 1, except for a
    /// fake-quantized latent weight, whose values are in steps of its grid rather than weight units (<see cref="FakeQuantization"/>).
    /// </summary>
    public float RateScale { get; set; } = 1;

    public int Rows => Shape[0];
    public int Columns => Shape.Length == 2 ? Shape[1] : 1;
    /// <summary>Weight decay applies to matrices only (embeddings, linear weights), not to norm gains or biases, as in GPT-2 / llm.c.</summary>
    public bool Decays => Shape.Length == 2;

    public void ZeroGrad()
    {
        if (_grad is not null) Array.Clear(_grad);
    }

    /// <summary>Freezes the current zeros: from now on exactly the nonzero weights train (a pruned checkpoint's pattern, e.g. 2:4).</summary>
    public void MaskZeros()
    {
        var mask = new byte[Value.Length];
        for (int i = 0; i < mask.Length; i++) mask[i] = Value[i] != 0 ? (byte)1 : (byte)0;
        SetMask(mask);
    }

    /// <summary>Sets the mask and zeroes the values (and gradient) under its zeros.</summary>
    public void SetMask(byte[] mask)
    {
        if (Quantization is not null) throw new InvalidOperationException($"{Name}: a fake-quantized tensor cannot take a mask");
        if (mask.Length != Value.Length) throw new ArgumentException($"{Name}: mask has {mask.Length} entries for {Value.Length} values", nameof(mask));
        Mask = mask;
        for (int i = 0; i < mask.Length; i++)
            if (mask[i] == 0)
            {
                Value[i] = 0;
                if (_grad is not null) _grad[i] = 0;
            }
    }

    /// <summary>Trains this tensor through <paramref name="quantization"/> (a grid of its shape) from now on.</summary>
    public void Quantize(FakeQuantization quantization)
    {
        if (Mask is not null) throw new InvalidOperationException($"{Name}: a masked tensor cannot be fake-quantized");
        if (Adapter is not null) throw new InvalidOperationException($"{Name}: a tensor with an adapter cannot be fake-quantized");
        if (quantization.Rows != Rows || quantization.Columns != Columns || Shape.Length != 2)
            throw new ArgumentException($"{Name}: a [{quantization.Rows}, {quantization.Columns}] grid for shape [{string.Join(", ", Shape)}]", nameof(quantization));
        Quantization = quantization;
    }
}
