using System.Text.Json;
using LlmShrink.Formats.Gguf;
using LlmShrink.Model;
using LlmShrink.Tokenization;

namespace LlmShrink.Export;

/// <summary>
/// The <c>tokenizer.ggml.*</c> keys of an exported GGUF file, as llama.cpp's converter writes them:
/// <list type="bullet">
/// <item>from a GGUF source: every <c>tokenizer.*</c> key copied unchanged;</item>
/// <item>from a Hugging Face folder with <c>tokenizer.model</c>: model "llama" with the SentencePiece pieces, scores and
/// piece types (SentencePiece's type numbers, which GGUF reuses), padded to vocab_size with <c>[PAD{id}]</c> unused tokens;</item>
/// <item>from a byte-level BPE <c>tokenizer.json</c>: model "gpt2" with the tokens by id, token types (added special
/// tokens CONTROL, other added tokens USER_DEFINED), the merges as "left right", and <c>pre</c> chosen from the
/// pre-tokenizer regex (llama-bpe, qwen2, or gpt2).</item>
/// </list>
/// Plus BOS/EOS/unknown ids, add_bos_token and add_space_prefix. A llama2.c source carries no vocabulary the file could
/// hold here, so none is written (the loader then sizes the vocabulary from token_embd).
/// </summary>
internal static class GgufTokenizerExport
{
    public static void Write(GgufWriter writer, LoadedModel model)
    {
        if (model.Format == "gguf") { CopyFromGguf(writer, model.Source); return; }
        if (!Directory.Exists(model.Source)) return;
        string spm = Path.Combine(model.Source, "tokenizer.model");
        string json = Path.Combine(model.Source, "tokenizer.json");
        if (File.Exists(spm)) FromSentencePiece(writer, model, spm);
        else if (File.Exists(json)) FromByteLevelJson(writer, model, json);
    }

    private static void CopyFromGguf(GgufWriter writer, string path)
    {
        using var source = GgufFile.Open(path);
        foreach (var (key, value) in source.Metadata)
            if (key.StartsWith("tokenizer.", StringComparison.Ordinal)) writer.Add(key, value);
    }

    private static void FromSentencePiece(GgufWriter writer, LoadedModel model, string path)
    {
        var spm = SentencePieceModel.Read(File.ReadAllBytes(path), path);
        int vocab = model.Config.VocabSize;
        if (spm.Pieces.Length > vocab)
            throw ShrinkException.InFile(path, $"{spm.Pieces.Length} pieces but the model's vocab_size is {vocab}");
        var tokens = new string[vocab];
        var scores = new float[vocab];
        var types = new int[vocab];
        for (int id = 0; id < vocab; id++)
        {
            bool real = id < spm.Pieces.Length;
            tokens[id] = real ? spm.Pieces[id] : $"[PAD{id}]";
            scores[id] = real ? spm.Scores[id] : -1000f;
            types[id] = real ? (int)spm.Kinds[id] : (int)TokenKind.Unused;
        }
        writer.AddString("tokenizer.ggml.model", "llama");
        writer.AddStrings("tokenizer.ggml.tokens", tokens);
        writer.AddFloat32s("tokenizer.ggml.scores", scores);
        writer.AddInt32s("tokenizer.ggml.token_type", types);
        AddSpecialIds(writer, model, spm.BosId, spm.EosId, spm.UnknownId >= 0 ? spm.UnknownId : null);
        writer.AddBool("tokenizer.ggml.add_bos_token", model.Tokenizer?.AddBos ?? true);
        writer.AddBool("tokenizer.ggml.add_space_prefix", spm.AddDummyPrefix);
    }

    private static void AddSpecialIds(GgufWriter writer, LoadedModel model, int bos, int eos, int? unknown)
    {
        bos = model.Tokenizer?.BosId ?? bos;
        eos = model.Tokenizer?.EosId ?? eos;
        if (bos >= 0) writer.AddUInt32("tokenizer.ggml.bos_token_id", (uint)bos);
        if (eos >= 0) writer.AddUInt32("tokenizer.ggml.eos_token_id", (uint)eos);
        if (unknown is >= 0) writer.AddUInt32("tokenizer.ggml.unknown_token_id", (uint)unknown);
    }

    private static void FromByteLevelJson(GgufWriter writer, LoadedModel model, string path)
    {
        using var document = ParseJson(path);
        var root = document.RootElement;
        if (!root.TryGetProperty("model", out var bpe) || !bpe.TryGetProperty("vocab", out var vocabulary) || vocabulary.ValueKind != JsonValueKind.Object)
            throw ShrinkException.InFile(path, "no BPE vocabulary (model.vocab) to export");
        string preTokenizer = root.TryGetProperty("pre_tokenizer", out var p) ? p.GetRawText() : "";
        if (!preTokenizer.Contains("ByteLevel", StringComparison.Ordinal))
            throw ShrinkException.InFile(path, "only byte-level BPE tokenizer.json can be exported to GGUF without a tokenizer.model");

        var byId = new SortedDictionary<int, (string Text, int Type)>();
        foreach (var entry in vocabulary.EnumerateObject()) byId[CheckedId(entry.Value, path)] = (entry.Name, (int)TokenKind.Normal);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            foreach (var token in added.EnumerateArray())
            {
                bool special = token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                byId[CheckedId(token.GetProperty("id"), path)] = (token.GetProperty("content").GetString()!, (int)(special ? TokenKind.Control : TokenKind.UserDefined));
            }
        int count = Math.Max(model.Config.VocabSize, byId.Count == 0 ? 0 : byId.Keys.Max() + 1);
        if (count > 2 * byId.Count + 1024) throw ShrinkException.InFile(path, $"token ids up to {count - 1} for only {byId.Count} tokens");
        var tokens = new string[count];
        var types = new int[count];
        for (int id = 0; id < count; id++)
            (tokens[id], types[id]) = byId.TryGetValue(id, out var t) ? t : ($"[PAD{id}]", (int)TokenKind.Unused);

        var merges = new List<string>();
        if (bpe.TryGetProperty("merges", out var list))
            foreach (var merge in list.EnumerateArray())
                merges.Add(merge.ValueKind == JsonValueKind.Array ? $"{merge[0].GetString()} {merge[1].GetString()}" : merge.GetString()!);

        writer.AddString("tokenizer.ggml.model", "gpt2");
        writer.AddString("tokenizer.ggml.pre", PreName(preTokenizer));
        writer.AddStrings("tokenizer.ggml.tokens", tokens);
        writer.AddInt32s("tokenizer.ggml.token_type", types);
        writer.AddStrings("tokenizer.ggml.merges", [.. merges]);
        AddSpecialIds(writer, model, model.Config.BosTokenId, model.Config.EosTokenId, null);
        writer.AddBool("tokenizer.ggml.add_bos_token", model.Tokenizer?.AddBos ?? false);
        writer.AddBool("tokenizer.ggml.add_space_prefix", false);
    }

    /// <summary>llama.cpp's name for the pre-tokenizer regex: Llama 3 splits digits in threes, Qwen2 one by one, GPT-2 in runs.</summary>
    private static string PreName(string preTokenizerJson) =>
        preTokenizerJson.Contains(@"\\p{N}{1,3}", StringComparison.Ordinal) ? "llama-bpe"
        : preTokenizerJson.Contains(@"|\\p{N}|", StringComparison.Ordinal) ? "qwen2"
        : "gpt2";

    private static JsonDocument ParseJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw ShrinkException.InFile(path, $"not valid JSON ({e.Message.ReplaceLineEndings(" ")})"); }
    }

    private static int CheckedId(JsonElement id, string path) =>
        id.ValueKind == JsonValueKind.Number && id.TryGetInt32(out int value) && value is >= 0 and < 16_777_216 ? value
        : throw ShrinkException.InFile(path, $"token id {id.GetRawText()} out of range");
}
