namespace LlmShrink.Formats;

/// <summary>
/// The tensors of a checkpoint by name, and the mapped files that hold them (disposed together).
/// Names are canonical Hugging Face names (e.g. <c>model.layers.0.self_attn.q_proj.weight</c>) once a
/// checkpoint has been loaded as a model; format readers may hold native names before mapping.
/// </summary>
public sealed class TensorSet : IDisposable
{
    private readonly Dictionary<string, StoredTensor> _byName = new(StringComparer.Ordinal);
    private readonly List<MappedFile> _files = new();

    public IReadOnlyCollection<StoredTensor> All => _byName.Values;
    /// <summary>The names tensors are held under (canonical ones once loaded as a model; a GGUF tensor's own <see cref="StoredTensor.Name"/> stays native).</summary>
    public IReadOnlyCollection<string> Names => _byName.Keys;
    public IReadOnlyList<MappedFile> Files => _files;
    public int Count => _byName.Count;

    public void AddFile(MappedFile file) => _files.Add(file);

    public void Add(StoredTensor tensor)
    {
        if (!_byName.TryAdd(tensor.Name, tensor))
            throw ShrinkException.InFile(tensor.File.Path, $"tensor '{tensor.Name}' appears twice");
    }

    /// <summary>Adds <paramref name="tensor"/> under another name (used when mapping native names to canonical ones).</summary>
    public void Add(string name, StoredTensor tensor)
    {
        if (!_byName.TryAdd(name, tensor))
            throw ShrinkException.InFile(tensor.File.Path, $"tensor '{name}' appears twice");
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public StoredTensor? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>The tensor, or a user error naming the checkpoint and the missing tensor.</summary>
    public StoredTensor Get(string name) =>
        _byName.TryGetValue(name, out var t) ? t
        : throw ShrinkException.InFile(_files.Count > 0 ? _files[0].Path : "checkpoint", $"missing tensor '{name}'");

    /// <summary>Bytes of all tensor data in this set.</summary>
    public long TensorBytes => _byName.Values.Sum(t => t.ByteLength);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
