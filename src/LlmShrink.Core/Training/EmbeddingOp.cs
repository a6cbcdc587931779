namespace LlmShrink.Training;

/// <summary>Token embedding: row i of the output is row tokens[i] of the table E [vocab, d]; dE[tokens[i]] += dY[i].</summary>
public static class EmbeddingOp
{
    public static void Forward(ReadOnlySpan<int> tokens, Parameter table, Span<float> output)
    {
        int d = table.Columns;
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i] >= (uint)table.Rows) throw new ArgumentOutOfRangeException(nameof(tokens), $"token {tokens[i]} is outside the vocabulary of {table.Rows}");
            table.Value.AsSpan(tokens[i] * d, d).CopyTo(output.Slice(i * d, d));
        }
    }

    /// <summary>Adds each row of <paramref name="dOutput"/> into the gradient row of its token (a token seen twice gets both).</summary>
    public static void Backward(ReadOnlySpan<int> tokens, ReadOnlySpan<float> dOutput, Parameter table)
    {
        int d = table.Columns;
        for (int i = 0; i < tokens.Length; i++)
        {
            var row = table.Grad.AsSpan(tokens[i] * d, d);
            System.Numerics.Tensors.TensorPrimitives.Add(row, dOutput.Slice(i * d, d), row);
        }
    }
}
