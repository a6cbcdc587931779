using System.Buffers.Binary;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Kernels;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// A layer stored in one of llama.cpp's block types (Q8_0 … Q2_K written, the I-quants read too): <c>ggml_blocks</c>
/// U8 [out, bytes per row] holds each row's blocks exactly as ggml lays them out (ggml-common.h; a row is a whole number
/// of blocks), <c>ggml_type</c> I32 [1] the type's ggml_type id (enum ggml_type in ggml.h, as GGUF tensor infos store
/// it). The blocks are what llama.cpp runs, so the GGUF export copies them unchanged (<see cref="StoredBlocks"/>); here
/// they run on the ggml kernels in place, or decoded once to float32 for types without a direct kernel. See docs/FORMAT.md.
/// </summary>
public sealed class GgmlTypeRepresentation : LayerRepresentation
{
    public static readonly GgmlTypeRepresentation Instance = new();
    public override string Name => "ggml";
    public override IReadOnlyList<string> Suffixes { get; } = [".ggml_blocks", ".ggml_type"];

    public override bool Detect(TensorSet weights, string module) => weights.Contains(module + ".ggml_blocks");

    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var blocks = StoredBlocks(weights, module);
        return ((int)blocks.Rows, (int)blocks.Columns);
    }

    /// <summary>The code width: the whole bits of the type's bits per weight (Q4_K 4.5 → 4, Q6_K 6.5625 → 6, Q8_0 8.5 → 8).</summary>
    public override int Bits(TensorSet weights, string module) => (int)TensorTypes.BitsPerElement(StoredBlocks(weights, module).Type);

    public override Linear Load(TensorSet weights, string module, float[]? bias)
    {
        var blocks = StoredBlocks(weights, module);
        return Linear.FromStored(blocks, bias, (int)blocks.Rows, (int)blocks.Columns);
    }

    /// <summary>
    /// The blocks as a tensor [out, in] of their ggml type over the same bytes of the file (nothing copied): loaders run it
    /// like a GGUF weight and the GGUF export writes its rows as they are. Malformed tensors are a one-line error naming the file.
    /// </summary>
    public override StoredTensor StoredBlocks(TensorSet weights, string module)
    {
        var blocks = weights.Get(module + ".ggml_blocks");
        var typeTensor = weights.Get(module + ".ggml_type");
        if (blocks.Type != TensorType.U8 || blocks.Shape.Length != 2 || blocks.Shape[0] is <= 0 or > int.MaxValue || blocks.Shape[1] <= 0)
            throw ShrinkException.InFile(blocks.File.Path, $"tensor '{blocks.Name}' is {blocks.Type} [{string.Join(", ", blocks.Shape)}], expected a U8 matrix [out, bytes per row]");
        if (typeTensor.Type != TensorType.I32 || typeTensor.ElementCount != 1)
            throw ShrinkException.InFile(typeTensor.File.Path, $"tensor '{typeTensor.Name}' is {typeTensor.Type} [{string.Join(", ", typeTensor.Shape)}], expected I32 [1] (a ggml type id)");
        int id = BinaryPrimitives.ReadInt32LittleEndian(typeTensor.Bytes());
        if (id < 0 || !GgmlTypeIds.TryToTensorType((uint)id, out var type) || !TensorTypes.IsBlockQuantized(type))
            throw ShrinkException.InFile(typeTensor.File.Path, $"tensor '{typeTensor.Name}' holds {id}, not the id of a ggml block type LlmShrink reads");
        long rowBytes = blocks.Shape[1], blockBytes = TensorTypes.BlockBytes(type);
        long columns = rowBytes / blockBytes * TensorTypes.BlockElements(type);
        if (rowBytes % blockBytes != 0 || columns > int.MaxValue)
            throw ShrinkException.InFile(blocks.File.Path, $"tensor '{blocks.Name}' has {rowBytes} bytes per row, not a whole number of {type} blocks of {blockBytes} bytes");
        return new StoredTensor(blocks.Name, [blocks.Shape[0], columns], type, blocks.File, blocks.Offset);
    }

    /// <summary>
    /// The layer over blocks held in memory, the same a loader builds from the written tensors (<see cref="Linear.FromStored"/>):
    /// the ggml kernel on the blocks where one exists, else the weights decoded to float32 once.
    /// </summary>
    public static Linear Build(TensorType type, byte[] blocks, int rows, int columns, float[]? bias)
    {
        if (GgmlMatMul.Supports(type)) return new GgmlLinear(type, blocks, columns, rows, bias);
        return new DenseLinear(Decode(type, blocks, rows, columns), rows, columns, bias);
    }

    /// <summary>The weights [rows, columns] the blocks decode to (llama.cpp's dequantize_row_* for the type).</summary>
    public static float[] Decode(TensorType type, byte[] blocks, int rows, int columns)
    {
        int rowBytes = checked((int)TensorTypes.ByteCount(type, columns));
        var w = new float[(long)rows * columns];
        for (int r = 0; r < rows; r++) GgmlBlocks.Dequantize(type, blocks.AsSpan(r * rowBytes, rowBytes), w.AsSpan(r * columns, columns));
        return w;
    }
}

/// <summary>
/// A layer quantized to a ggml block type (the <c>ggml</c> method): <see cref="Blocks"/> holds <see cref="Rows"/> rows of
/// <see cref="Columns"/> weights, each row the type's blocks as <see cref="GgmlQuantizers.Quantize"/> wrote them.
/// </summary>
public sealed record GgmlTypeLayer(int Layer, LinearRole Role, TensorType Type, byte[] Blocks, int Rows, int Columns, float[]? Bias) : CompressedLayer(Layer, Role, Bias)
{
    public override LayerRepresentation Representation => GgmlTypeRepresentation.Instance;
    public override int Rows { get; } = Rows;
    public override int Columns { get; } = Columns;

    public override Linear Build() => GgmlTypeRepresentation.Build(Type, Blocks, Rows, Columns, Bias);

    /// <summary>The blocks' bytes — scales, mins and codes, exactly what llama.cpp stores (the 4-byte type id not counted).</summary>
    public override double StoredBits => 8.0 * Blocks.Length;

    public override float[] Dequantize() => GgmlTypeRepresentation.Decode(Type, Blocks, Rows, Columns);

    protected override string Scheme => $"ggml {Type}";

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module)
    {
        yield return Entries.Raw(module + ".ggml_blocks", TensorType.U8, [Rows, TensorTypes.ByteCount(Type, Columns)], Blocks);
        yield return Entries.Ints(module + ".ggml_type", [(int)GgmlTypeIds.FromTensorType(Type)], [1]);
    }

    /// <summary>The first weight a keep-mask prunes that the blocks do not decode to exactly 0, or null when every pruned weight is 0.</summary>
    public (int Row, int Column, float Value)? PrunedNonzero(bool[] keep)
    {
        int rowBytes = checked((int)TensorTypes.ByteCount(Type, Columns));
        var row = new float[Columns];
        for (int r = 0; r < Rows; r++)
        {
            GgmlBlocks.Dequantize(Type, Blocks.AsSpan(r * rowBytes, rowBytes), row);
            for (int c = 0; c < Columns; c++)
                if (!keep[r * Columns + c] && row[c] != 0) return (r, c, row[c]);
        }
        return null;
    }
}
