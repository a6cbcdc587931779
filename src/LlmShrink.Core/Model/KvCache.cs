namespace LlmShrink.Model;

/// <summary>
/// Keys and values of past positions for every layer (keys after RoPE), each layer a [kvHeads, Capacity, headDim]
/// array for keys and one for values, kvHeads being that layer's own (the blocks of a pruned model may differ).
/// Head-major, so that the positions one head attends to are contiguous: decode streams them, where position-major rows
/// left 256-byte pieces at a 2 KB stride that the hardware prefetchers did not follow (attention over 600 positions of a
/// Llama-3.2-1B shape took 3.3× as long). A layer's storage is allocated when its first keys are stored, so a cache that
/// only ever sees one block (the calibration pipeline's) holds one layer.
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

    private float[]?[] _keys = [], _values = [];
    private int[] _kvHeads = [];
    private int _headDim;

    /// <summary>Bytes of key and value storage allocated so far (layers that have stored nothing take none).</summary>
    public long AllocatedBytes => _keys.Concat(_values).Sum(a => a?.LongLength ?? 0) * sizeof(float);

    public KvCache(int capacity)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), "cache capacity must be positive");
        Capacity = capacity;
    }

    public void Clear() => Length = 0;

    /// <summary>Sets the cache up for <paramref name="config"/>'s layers on first use; a cache serves one model's dimensions.</summary>
    internal void EnsureStorage(ModelConfig config)
    {
        if (Fits(config)) return;
        if (_keys.Length != 0) throw new InvalidOperationException("this cache belongs to a model of other dimensions");
        if ((long)Capacity * config.NumKvHeads * config.HeadDim > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(Capacity), $"a cache of {Capacity} positions is too large");
        _kvHeads = new int[config.NumLayers];
        for (int l = 0; l < _kvHeads.Length; l++) _kvHeads[l] = config.Layer(l).KvHeads;
        _headDim = config.HeadDim;
        _keys = new float[config.NumLayers][];
        _values = new float[config.NumLayers][];
    }

    private bool Fits(ModelConfig config)
    {
        if (_kvHeads.Length != config.NumLayers || _headDim != config.HeadDim) return false;
        for (int l = 0; l < _kvHeads.Length; l++)
            if (_kvHeads[l] != config.Layer(l).KvHeads) return false;
        return true;
    }

    /// <summary>Layer <paramref name="layer"/>'s keys and values, [kvHeads, Capacity, headDim] each, allocated on first use.</summary>
    internal (float[] Keys, float[] Values) Layer(int layer)
    {
        int floats = Capacity * _kvHeads[layer] * _headDim;
        return (_keys[layer] ??= new float[floats], _values[layer] ??= new float[floats]);
    }

    /// <summary>Writes the keys and values of new positions first … first + n − 1, rows [n, kvHeads·headDim], into layer <paramref name="layer"/>'s head-major storage.</summary>
    internal void Store(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int first, int n)
    {
        var (layerKeys, layerValues) = Layer(layer);
        int kvHeads = _kvHeads[layer], kvDim = kvHeads * _headDim;
        for (int head = 0; head < kvHeads; head++)
            for (int i = 0; i < n; i++)
            {
                int from = i * kvDim + head * _headDim, to = (head * Capacity + first + i) * _headDim;
                keys.Slice(from, _headDim).CopyTo(layerKeys.AsSpan(to, _headDim));
                values.Slice(from, _headDim).CopyTo(layerValues.AsSpan(to, _headDim));
            }
    }
}
