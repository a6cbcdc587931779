using LlmShrink.Compression;
using LlmShrink.Model;

namespace LlmShrink.Tests;

/// <summary>
/// tinylit-8m compressed once per recipe for the whole test run (8 calibration samples × 128 tokens), in a temporary
/// folder removed when the test collection that uses it ends. Tests only read these folders.
/// </summary>
internal static class CompressedTinyLit
{
    /// <summary>The test classes that share these folders run one after the other, so two compressions never compete for the cores.</summary>
    public const string Collection = "compressed tinylit-8m";

    public const string SymmetricG32 = "bits: 4\n    group_size: 32\n    symmetric: true";
    public const string AsymmetricG32 = "bits: 4\n    group_size: 32\n    symmetric: false";
    public const string ActOrderG128 = "bits: 4\n    group_size: 128\n    symmetric: true\n    act_order: true";

    private static readonly string Root = Directory.CreateTempSubdirectory("llmshrink-compressed-").FullName;
    private static readonly Dictionary<string, Lazy<string>> Folders = new();

    /// <summary>Removes every compressed folder (called once the collection's tests are done).</summary>
    public static void DeleteAll()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }

    /// <summary>The folder for GPTQ with these recipe parameters (YAML lines under the modifier).</summary>
    public static string Gptq(string parameters) => Folder("gptq", parameters);

    public static string Folder(string method, string parameters)
    {
        Lazy<string> folder;
        lock (Folders)
        {
            string key = method + "|" + parameters;
            if (!Folders.TryGetValue(key, out folder!))
                Folders[key] = folder = new Lazy<string>(() => Compress(method, parameters, Folders.Count));
        }
        return folder.Value;
    }

    private static string Compress(string method, string parameters, int id)
    {
        string recipe = Path.Combine(Root, $"recipe{id}.yaml");
        File.WriteAllText(recipe, $"modifiers:\n  - method: {method}\n    targets: [Linear]\n    ignore: [lm_head]\n    {parameters}\n");
        string output = Path.Combine(Root, $"model{id}");
        CompressionJob.Run(new CompressionRequest(SharedData.TinyLit, recipe, SharedData.Corpus("tinylit_calib.txt"), Samples: 8, SequenceLength: 128, Seed: 1, output));
        return output;
    }

    /// <summary>The first <paramref name="count"/> tokens of the evaluation text (BOS first).</summary>
    public static int[] EvalTokens(LoadedModel model, int count) =>
        model.RequireTokenizer().Encode(File.ReadAllText(SharedData.Corpus("tinylit_eval.txt"))[..4000], true).Take(count).ToArray();
}

/// <summary>The test collection sharing <see cref="CompressedTinyLit"/>; xunit disposes its fixture after the last test.</summary>
[Xunit.CollectionDefinition(CompressedTinyLit.Collection)]
public sealed class CompressedTinyLitCollection : Xunit.ICollectionFixture<CompressedTinyLitCleanup>;

public sealed class CompressedTinyLitCleanup : IDisposable
{
    public void Dispose() => CompressedTinyLit.DeleteAll();
}
