namespace LlmShrink.Model;

/// <summary>
/// Keys and values of past positions for every layer (keys after RoPE), each layer a [kvHeads, Capacity, headDim]
/// array for keys and one for values. Head-major, so that the positions one head attends to are contiguous: decode
/// streams them, where position-major rows left 256-byte pieces at a 2 KB stride that the hardware prefetchers did not
/// follow (attention over 600 positions of a Llama-3.2-1B shape took 3.3× as long). Storage is allocated by the first
/// forward pass that uses the cache.
/// </summary>
public sealed class KvCache
{
    private int _length;

    public int Capacity { get; }

    /// <summary>Positions held. Setting it lower forgets the later positions (e.g. to re-run from a prefix).</summary>
    public int Length
    {
        get => _length;
        set => _length = (uint)value <= (uint)Capacity ? value
            : throw new ArgumentOutOfRangeException(nameof(value), $"cache length must be in [0, {Capacity}]");
    }

    internal float[][] Keys { get; private set; } = [];
    internal float[][] Values { get; private set; } = [];
    private int _kvHeads, _headDim;

    public KvCache(int capacity)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), "cache capacity must be positive");
        Capacity = capacity;
    }

    public void Clear() => Length = 0;

    internal void EnsureStorage(int layers, int kvHeads, int headDim)
    {
        if (Keys.Length == layers && _kvHeads == kvHeads && _headDim == headDim) return;
        if (Keys.Length != 0) throw new InvalidOperationException("this cache belongs to a model of other dimensions");
        long floats = (long)Capacity * kvHeads * headDim;
        if (floats > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(Capacity), $"a cache of {Capacity} positions is too large");
        Keys = new float[layers][];
        Values = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            Keys[l] = new float[floats];
            Values[l] = new float[floats];
        }
        (_kvHeads, _headDim) = (kvHeads, headDim);
    }

    /// <summary>Writes the keys and values of new positions first … first + n − 1, rows [n, kvHeads·headDim], into layer <paramref name="layer"/>'s head-major storage.</summary>
    internal void Store(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int first, int n)
    {
        int kvDim = _kvHeads * _headDim;
        for (int head = 0; head < _kvHeads; head++)
            for (int i = 0; i < n; i++)
            {
                int from = i * kvDim + head * _headDim, to = (head * Capacity + first + i) * _headDim;
                keys.Slice(from, _headDim).CopyTo(Keys[layer].AsSpan(to, _headDim));
                values.Slice(from, _headDim).CopyTo(Values[layer].AsSpan(to, _headDim));
            }
    }
}
