using System.Runtime.Intrinsics;
using LlmShrink.Formats;
using LlmShrink.Kernels;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>The 16-bit layers (BF16 and F16) read in place, against their double-precision reference.</summary>
public class HalfWidthLinearTests
{
    private static (float[] X, ushort[] W) RandomProblem(Random random, int n, int inDim, int outDim, bool f16 = false)
    {
        var x = new float[n * inDim];
        for (int i = 0; i < x.Length; i++) x[i] = 2 * random.NextSingle() - 1;
        var w = new ushort[outDim * inDim];
        for (int i = 0; i < w.Length; i++)
        {
            float value = 0.1f * (2 * random.NextSingle() - 1);
            w[i] = f16 ? BitConverter.HalfToUInt16Bits((Half)value) : (ushort)(BitConverter.SingleToInt32Bits(value) >>> 16);
        }
        return (x, w);
    }

    private static float Widen(ushort bits, bool f16) => f16 ? Float16.Widen(bits) : Bfloat16.Widen(bits);

    /// <summary>Float rounding of each dot product is bounded relative to Σ|x·w| (exact widening, float32 sums).</summary>
    private static void AssertClose(float[] x, ushort[] w, float[] expected, float[] actual, int n, int inDim, int outDim, bool f16 = false)
    {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < outDim; j++)
            {
                if (!float.IsFinite(expected[i * outDim + j])) { Assert.Equal(expected[i * outDim + j], actual[i * outDim + j]); continue; }
                double magnitude = 0;
                for (int k = 0; k < inDim; k++) magnitude += Math.Abs(x[i * inDim + k] * Widen(w[j * inDim + k], f16));
                float error = Math.Abs(actual[i * outDim + j] - expected[i * outDim + j]);
                Assert.True(error <= 2e-6 * magnitude + 1e-30, $"y[{i},{j}] = {actual[i * outDim + j]}, reference {expected[i * outDim + j]}");
            }
    }

    [Theory]
    [InlineData(1, 64, 5)]
    [InlineData(1, 1000, 37)]   // in not a multiple of 16: a masked last vector; 37 rows: one left after the 4-row passes
    [InlineData(1, 983, 7)]     // a low-rank factor's rank as the row length
    [InlineData(1, 9, 6)]       // rows shorter than one vector: scalar
    [InlineData(1, 2048, 130)]
    [InlineData(4, 200, 9)]
    [InlineData(70, 1100, 150)] // prompt tiles: several 512-element slices, x blocks of 64 rows, ragged last tile
    public void Kernel_matches_reference(int n, int inDim, int outDim)
    {
        Check<Bfloat16>(n, inDim, outDim, f16: false);
        Check<Float16>(n, inDim, outDim, f16: true);
        Check<FiniteFloat16>(n, inDim, outDim, f16: true);
    }

    private static void Check<TFormat>(int n, int inDim, int outDim, bool f16) where TFormat : struct, IHalfWidthFormat
    {
        var random = new Random(n * 1000 + inDim + outDim);
        var (x, w) = RandomProblem(random, n, inDim, outDim, f16);
        var expected = new float[n * outDim];
        HalfWidthMatMul<TFormat>.Reference(x, w, expected, n, inDim, outDim);
        var layer = new HalfWidthLinear<TFormat>(w, outDim, inDim, bias: null);
        foreach (bool vectorized in new[] { true, false })
        {
            layer.Weights.Vectorized = vectorized && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
            var actual = new float[n * outDim];
            Array.Fill(actual, float.NaN); // must overwrite y
            layer.Apply(x, actual, n, WorkerPool.Shared, 0);
            AssertClose(x, w, expected, actual, n, inDim, outDim, f16);
        }
    }

    /// <summary>
    /// Decode's F16 kernel leaves the 2¹¹² of the widening to the activations (scaled once per call): its y must be the
    /// exact-widening kernel's bit for bit, with subnormal and zero weights, and with activations so large (2¹⁸, beyond
    /// the 2¹⁵ that x·2¹¹² keeps finite) that the scale is lowered and the rest applied to y; x is a longer buffer.
    /// </summary>
    [Theory]
    [InlineData(1f)]
    [InlineData(300_000f)]
    [InlineData(3e37f)]
    public void Finite_f16_decode_with_scaled_activations_equals_the_exact_kernel_bit_for_bit(float activationSize)
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return;
        var random = new Random(11);
        int inDim = 1000, outDim = 37;
        var (x, w) = RandomProblem(random, 1, inDim, outDim, f16: true);
        for (int i = 0; i < x.Length; i++) x[i] *= activationSize;
        for (int i = 0; i < w.Length; i += 7) w[i] = (ushort)(random.Next(2) << 15 | random.Next(1, 1024)); // subnormals
        for (int i = 3; i < w.Length; i += 11) w[i] = 0;
        x = [.. x, 0.5f, -0.5f]; // a longer buffer, as the transformer passes
        float[] exact = new float[outDim], scaled = new float[outDim];
        new HalfWidthLinear<Float16>(w, outDim, inDim, bias: null).Apply(x, exact, 1, WorkerPool.Shared, 0);
        new HalfWidthLinear<FiniteFloat16>(w, outDim, inDim, bias: null).Apply(x, scaled, 1, WorkerPool.Shared, 0);
        Assert.Equal(exact.Select(BitConverter.SingleToUInt32Bits), scaled.Select(BitConverter.SingleToUInt32Bits));
        Assert.All(exact, y => Assert.True(float.IsFinite(y) && y != 0));
    }

    /// <summary>
    /// Every one of the 65536 binary16 bit patterns — zeros, subnormals, normals, infinities, NaNs — widens in registers
    /// to exactly the float32 bits of .NET's own conversion (NaNs: to a NaN with the same sign and payload), in registers
    /// in scalar code, and in the table the block kernels read their fp16 scales from.
    /// </summary>
    [Fact]
    public unsafe void Float16_widening_is_exact_for_every_bit_pattern()
    {
        var all = new ushort[65536];
        for (int i = 0; i < all.Length; i++) all[i] = (ushort)i;
        var widened = new float[16];
        fixed (ushort* p = all)
            for (int i = 0; i < all.Length; i += 16)
            {
                if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported) Float16.Widen(p + i).CopyTo(widened);
                else for (int l = 0; l < 16; l++) widened[l] = Float16.Widen(all[i + l]);
                for (int l = 0; l < 16; l++)
                {
                    float expected = (float)BitConverter.UInt16BitsToHalf(all[i + l]);
                    Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(Float16.Widen(all[i + l])));
                    Assert.Equal(BitConverter.SingleToUInt32Bits(expected), BitConverter.SingleToUInt32Bits(Float16.Table[all[i + l]]));
                    Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(widened[l]),
                        $"0x{all[i + l]:X4}: {widened[l]} (0x{BitConverter.SingleToUInt32Bits(widened[l]):X8}), expected {expected} (0x{BitConverter.SingleToUInt32Bits(expected):X8})");
                }
            }
    }

    /// <summary>
    /// The finite-only widening is exact for every binary16 pattern but infinities and NaNs (all 63488 of them, both
    /// signs, zeros and subnormals included), and the check that routes a tensor to it finds a single non-finite value.
    /// </summary>
    [Fact]
    public unsafe void FiniteFloat16_widening_is_exact_for_every_finite_bit_pattern()
    {
        var finite = Enumerable.Range(0, 65536).Select(i => (ushort)i).Where(b => (b & 0x7C00) != 0x7C00).ToArray();
        Assert.Equal(63488, finite.Length);
        var widened = new float[16];
        fixed (ushort* p = finite)
        {
            Assert.True(FiniteFloat16.HoldsOnlyFinite(p, finite.Length));
            for (int i = 0; i < finite.Length; i += 16)
            {
                if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported) FiniteFloat16.Widen(p + i).CopyTo(widened);
                else for (int l = 0; l < 16; l++) widened[l] = FiniteFloat16.Widen(finite[i + l]);
                for (int l = 0; l < 16; l++)
                    Assert.Equal(BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf(finite[i + l])), BitConverter.SingleToUInt32Bits(widened[l]));
            }
        }
        foreach (ushort special in new ushort[] { 0x7C00, 0xFC00, 0x7E00, 0xFD01 })
            foreach (int at in new[] { 0, 31, 32, 1000, 1024 }) // in a vector, at its edge, in the scalar tail
            {
                var values = new ushort[1025];
                values[at] = special;
                fixed (ushort* p = values) Assert.False(FiniteFloat16.HoldsOnlyFinite(p, values.Length), $"0x{special:X4} at {at}");
            }
    }

    [Fact]
    public void Widening_is_exact_and_agrees_with_the_float32_layer()
    {
        var random = new Random(5);
        int n = 3, inDim = 96, outDim = 10;
        var (x, w) = RandomProblem(random, n, inDim, outDim);
        var asFloat = w.Select(b => BitConverter.Int32BitsToSingle(b << 16)).ToArray();
        var bias = Enumerable.Range(0, outDim).Select(i => 0.25f * i).ToArray();
        float[] bf16 = new float[n * outDim], f32 = new float[n * outDim];
        new HalfWidthLinear<Bfloat16>(w, outDim, inDim, bias).Apply(x, bf16, n, WorkerPool.Shared, 0);
        new DenseLinear(asFloat, outDim, inDim, bias).Apply(x, f32, n, WorkerPool.Shared, 0);
        Assert.Equal(f32, bf16); // same float tiles through the same micro-kernel
        Assert.Equal(2L * inDim * outDim, new HalfWidthLinear<Bfloat16>(w, outDim, inDim, null).WeightBytes);
    }

    [Fact]
    public void FromStored_reads_bf16_and_f16_in_place()
    {
        FromStored<Bfloat16>(TensorType.BF16);
        FromStored<FiniteFloat16>(TensorType.F16);
        FromStored<Float16>(TensorType.F16, infinity: true); // one infinite weight: the exact path for every pattern
    }

    private static void FromStored<TFormat>(TensorType type, bool infinity = false) where TFormat : struct, IHalfWidthFormat
    {
        using var dir = new TempDir();
        var random = new Random(8);
        int inDim = 48, outDim = 6;
        bool f16 = type == TensorType.F16;
        var (x, w) = RandomProblem(random, 1, inDim, outDim, f16);
        if (infinity) w[100] = 0x7C00;
        string path = dir.File("weights.bin");
        var bytes = new byte[2 * w.Length];
        Buffer.BlockCopy(w, 0, bytes, 0, bytes.Length);
        File.WriteAllBytes(path, bytes);
        using var file = new MappedFile(path);
        var layer = Linear.FromStored(new StoredTensor("w", [outDim, inDim], type, file, 0), null, outDim, inDim);
        Assert.IsType<HalfWidthLinear<TFormat>>(layer is DeferredLinear deferred ? deferred.Layer : layer);
        var expected = new float[outDim];
        HalfWidthMatMul<TFormat>.Reference(x, w, expected, 1, inDim, outDim);
        var actual = new float[outDim];
        layer.Apply(x, actual, 1, WorkerPool.Shared, 0);
        AssertClose(x, w, expected, actual, 1, inDim, outDim, f16);
    }
}
