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
/// </summary>
public sealed class Parameter
{
    public string Name { get; }
    /// <summary>[rows, columns] for a matrix, [length] for a vector.</summary>
    public int[] Shape { get; }
    public float[] Value { get; }
    public float[] Grad { get; }
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
        Grad = new float[value.Length];
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

    public void ZeroGrad() => Array.Clear(Grad);

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
            if (mask[i] == 0) Value[i] = Grad[i] = 0;
    }

    /// <summary>Trains this tensor through <paramref name="quantization"/> (a grid of its shape) from now on.</summary>
    public void Quantize(FakeQuantization quantization)
    {
        if (Mask is not null) throw new InvalidOperationException($"{Name}: a masked tensor cannot be fake-quantized");
        if (quantization.Rows != Rows || quantization.Columns != Columns || Shape.Length != 2)
            throw new ArgumentException($"{Name}: a [{quantization.Rows}, {quantization.Columns}] grid for shape [{string.Join(", ", Shape)}]", nameof(quantization));
        Quantization = quantization;
    }
}
