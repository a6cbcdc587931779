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
    internal int KvDim { get; private set; }

    public KvCache(int capacity)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), "cache capacity must be positive");
        Capacity = capacity;
    }

    public void Clear() => Length = 0;

    internal void EnsureStorage(int layers, int kvDim)
    {
        if (Keys.Length == layers && KvDim == kvDim) return;
        if (Keys.Length != 0) throw new InvalidOperationException("this cache belongs to a model of other dimensions");
        long floats = (long)Capacity * kvDim;
        if (floats > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(Capacity), $"a cache of {Capacity} positions is too large");
        Keys = new float[layers][];
        Values = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            Keys[l] = new float[floats];
            Values[l] = new float[floats];
        }
        KvDim = kvDim;
    }
}
