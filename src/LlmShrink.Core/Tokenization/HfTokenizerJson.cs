using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace LlmShrink.Tokenization;

/// <summary>
/// Hugging Face's <c>tokenizer.json</c> with a BPE model, in its two families:
/// byte-level (pre_tokenizer/decoder ByteLevel: GPT-2, Llama 3, Qwen2, SmolLM) → <see cref="ByteLevelBpeTokenizer"/>;
/// SentencePiece-style (▁ for spaces via Prepend/Replace normalizers or Metaspace, byte_fallback: Llama 2, TinyLlama,
/// Mistral) → a <see cref="SentencePieceModel"/> whose scores follow the merge ranks, run by <see cref="SentencePieceTextTokenizer"/>.
/// </summary>
public static class HfTokenizerJson
{
    private const string Metaspace = "▁";

    public static ITextTokenizer Load(string path, TokenizerConfig config)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return Load(doc.RootElement, path, config);
        }
        // ArgumentNullException: a string field holding null (GetString() returns null), then used as a name.
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException or ArgumentNullException)
        {
            throw ShrinkException.InFile(path, $"malformed tokenizer.json: {e.Message}");
        }
    }

    private static ITextTokenizer Load(JsonElement root, string path, TokenizerConfig config)
    {
        var model = root.GetProperty("model");
        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : model.TryGetProperty("merges", out _) ? "BPE" : "";
        if (type != "BPE")
            throw ShrinkException.InFile(path, $"unsupported tokenizer model type '{type}' (only BPE is supported)");

        var vocab = new Dictionary<string, int>();
        var tokenOfId = new Dictionary<int, string>();
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
        {
            int id = CheckedId(entry.Value.GetInt32(), path);
            // The BPE model indexes tokens by id and would fail on a second token with the same id.
            if (!tokenOfId.TryAdd(id, entry.Name) && tokenOfId[id] != entry.Name)
                throw ShrinkException.InFile(path, $"model.vocab gives id {id} to both '{tokenOfId[id]}' and '{entry.Name}'");
            vocab[entry.Name] = id;
        }
        var merges = ReadMerges(model, path);
        var added = new List<(string Text, int Id, bool Special)>();
        if (root.TryGetProperty("added_tokens", out var addedTokens) && addedTokens.ValueKind == JsonValueKind.Array)
            foreach (var a in addedTokens.EnumerateArray())
                added.Add((a.GetProperty("content").GetString()!, CheckedId(a.GetProperty("id").GetInt32(), path),
                    a.TryGetProperty("special", out var s) && s.GetBoolean()));

        var preTokenizers = Flatten(root, "pre_tokenizer", "pretokenizers");
        var normalizers = Flatten(root, "normalizer", "normalizers");
        bool byteLevel = preTokenizers.Any(p => TypeOf(p) == "ByteLevel")
            || root.TryGetProperty("decoder", out var decoder) && Flatten(decoder, "decoders").Any(d => TypeOf(d) == "ByteLevel");

        int IdOf(string? text) =>
            text is null ? -1 : added.FirstOrDefault(a => a.Text == text) is { Text: not null } a ? a.Id : vocab.GetValueOrDefault(text, -1);
        var (templateBos, templateHasBos) = TemplateBos(root, path);
        int bosId = IdOf(config.BosToken) is >= 0 and var b ? b : templateBos;
        int eosId = IdOf(config.EosToken);
        bool Flag(JsonElement e, string name, bool fallback) => e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

        if (byteLevel)
        {
            var patterns = new List<Regex>();
            bool addPrefixSpace = false;
            foreach (var p in preTokenizers)
                switch (TypeOf(p))
                {
                    case "ByteLevel":
                        addPrefixSpace = Flag(p, "add_prefix_space", true);
                        if (Flag(p, "use_regex", true)) patterns.Add(PreTokenizerPatterns.Gpt2);
                        break;
                    case "Split":
                        patterns.Add(SplitPattern(p, path));
                        break;
                    case "Digits":
                        patterns.Add(new Regex(Flag(p, "individual_digits", false) ? @"\p{N}" : @"\p{N}+", RegexOptions.CultureInvariant));
                        break;
                    default:
                        throw ShrinkException.InFile(path, $"unsupported pre_tokenizer '{TypeOf(p)}' for byte-level BPE");
                }
            NormalizationForm? form = null;
            foreach (var n in normalizers)
                form = TypeOf(n) switch
                {
                    "NFC" => NormalizationForm.FormC,
                    "NFD" => NormalizationForm.FormD,
                    "NFKC" => NormalizationForm.FormKC,
                    "NFKD" => NormalizationForm.FormKD,
                    var other => throw ShrinkException.InFile(path, $"unsupported normalizer '{other}' for byte-level BPE"),
                };
            var specials = added.Select(a => new ByteLevelBpeTokenizer.SpecialToken(a.Text, a.Id, SkipWhenDecoding: a.Special)).ToList();
            var ordinary = vocab.Where(v => !added.Any(a => a.Id == v.Value)).ToDictionary();
            return new ByteLevelBpeTokenizer(ordinary, merges, specials, [.. patterns], Flag(model, "ignore_merges", false), addPrefixSpace,
                bosId, eosId, config.AddBos ?? templateHasBos, 0, form);
        }

        var spm = SentencePieceStyle(vocab, merges, added, model, normalizers, preTokenizers, path,
            bosId >= 0 ? bosId : vocab.GetValueOrDefault("<s>", -1), eosId >= 0 ? eosId : vocab.GetValueOrDefault("</s>", -1));
        return new SentencePieceTextTokenizer(spm, config.AddBos ?? templateHasBos, path);
    }

    /// <summary>
    /// The SentencePiece model equivalent to a ▁-style BPE tokenizer.json. SentencePiece merges the adjacent pair whose
    /// joined piece scores best; giving each piece the negated rank of the first merge that builds it makes that order the
    /// merge-rank order Hugging Face applies. Pieces no merge builds (single characters, specials) score below every merge.
    /// </summary>
    private static SentencePieceModel SentencePieceStyle(Dictionary<string, int> vocab, List<(string Left, string Right)> merges,
        List<(string Text, int Id, bool Special)> added, JsonElement model, List<JsonElement> normalizers, List<JsonElement> preTokenizers,
        string path, int bosId, int eosId)
    {
        bool addDummyPrefix = false, escapesSpaces = false;
        foreach (var n in normalizers)
            switch (TypeOf(n))
            {
                case "Prepend": addDummyPrefix |= n.GetProperty("prepend").GetString() == Metaspace; break;
                case "Replace":
                    escapesSpaces |= n.GetProperty("pattern").TryGetProperty("String", out var from) && from.GetString() == " "
                        && n.GetProperty("content").GetString() == Metaspace;
                    break;
                default: throw ShrinkException.InFile(path, $"unsupported normalizer '{TypeOf(n)}' for SentencePiece-style BPE");
            }
        foreach (var p in preTokenizers)
        {
            if (TypeOf(p) != "Metaspace") throw ShrinkException.InFile(path, $"unsupported pre_tokenizer '{TypeOf(p)}' for SentencePiece-style BPE");
            escapesSpaces = true;
            string scheme = p.TryGetProperty("prepend_scheme", out var s) ? s.GetString() ?? "always"
                : p.TryGetProperty("add_prefix_space", out var a) && !a.GetBoolean() ? "never" : "always";
            addDummyPrefix |= scheme != "never";
        }
        if (!escapesSpaces)
            throw ShrinkException.InFile(path, "BPE tokenizer is neither byte-level nor SentencePiece-style (no ▁ for spaces)");

        int count = 1 + Math.Max(vocab.Values.DefaultIfEmpty(-1).Max(), added.Select(a => a.Id).DefaultIfEmpty(-1).Max());
        if (count > 2 * (vocab.Count + added.Count) + 1024) throw ShrinkException.InFile(path, $"token ids up to {count - 1} for only {vocab.Count} tokens");
        var pieces = new string[count];
        var kinds = new TokenKind[count];
        var scores = new float[count];
        Array.Fill(scores, -(merges.Count + 1f));
        bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.GetBoolean();
        string? unk = model.TryGetProperty("unk_token", out var u) ? u.GetString() : null;
        foreach (var (text, id) in vocab)
        {
            pieces[id] = text;
            kinds[id] = text == unk ? TokenKind.Unknown : byteFallback && Llama2cTokenizerFile.IsBytePiece(text) ? TokenKind.Byte : TokenKind.Normal;
        }
        foreach (var (text, id, special) in added)
        {
            pieces[id] = text;
            kinds[id] = text == unk ? TokenKind.Unknown : special ? TokenKind.Control : TokenKind.UserDefined;
        }
        for (int id = 0; id < count; id++)
            if (pieces[id] is null) { pieces[id] = $"<unused{id}>"; kinds[id] = TokenKind.Unused; }
        for (int rank = merges.Count - 1; rank >= 0; rank--) // backwards: the first (best) merge building a piece wins
            if (vocab.TryGetValue(merges[rank].Left + merges[rank].Right, out int id)) scores[id] = -rank;

        int unknownId = unk is not null && vocab.TryGetValue(unk, out int uid) ? uid : Math.Max(0, Array.IndexOf(kinds, TokenKind.Unknown));
        return new SentencePieceModel(pieces, scores, kinds, SentencePieceAlgorithm.Bpe, unknownId, bosId, eosId, addDummyPrefix,
            RemoveExtraWhitespaces: false);
    }

    /// <summary>Merges as "left right" strings (older files) or as [left, right] pairs (newer files).</summary>
    private static List<(string, string)> ReadMerges(JsonElement model, string path)
    {
        var merges = new List<(string, string)>();
        if (!model.TryGetProperty("merges", out var list)) return merges;
        foreach (var m in list.EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2)
                merges.Add((m[0].GetString()!, m[1].GetString()!));
            else if (m.ValueKind == JsonValueKind.String && m.GetString()! is var s && s.IndexOf(' ', 1) is > 0 and var space)
                merges.Add((s[..space], s[(space + 1)..]));
            else throw ShrinkException.InFile(path, $"malformed merge {m.GetRawText()}");
        }
        return merges;
    }

    /// <summary>BOS from a TemplateProcessing post-processor whose single-sequence template starts with a special token.</summary>
    private static (int BosId, bool HasBos) TemplateBos(JsonElement root, string path)
    {
        if (!root.TryGetProperty("post_processor", out var post)) return (-1, false);
        foreach (var p in Flatten(post, "processors"))
        {
            if (TypeOf(p) != "TemplateProcessing" || !p.TryGetProperty("single", out var single) || single.GetArrayLength() == 0) continue;
            if (!single[0].TryGetProperty("SpecialToken", out var first)) return (-1, false);
            string name = first.GetProperty("id").GetString()!;
            var ids = p.GetProperty("special_tokens").GetProperty(name).GetProperty("ids");
            if (ids.GetArrayLength() == 0) throw ShrinkException.InFile(path, $"post_processor: special token '{name}' has no ids");
            return (ids[0].GetInt32(), true);
        }
        return (-1, false);
    }

    private static Regex SplitPattern(JsonElement split, string path)
    {
        string behavior = split.TryGetProperty("behavior", out var b) ? b.GetString() ?? "" : "";
        if (behavior != "Isolated" || split.TryGetProperty("invert", out var inv) && inv.GetBoolean())
            throw ShrinkException.InFile(path, $"unsupported Split pre_tokenizer behaviour '{behavior}'");
        var pattern = split.GetProperty("pattern");
        string regex = pattern.TryGetProperty("Regex", out var r) ? r.GetString()! : Regex.Escape(pattern.GetProperty("String").GetString()!);
        try { return new Regex(regex, RegexOptions.CultureInvariant); }
        catch (ArgumentException e) { throw ShrinkException.InFile(path, $"pre_tokenizer regex not understood: {e.Message}"); }
    }

    /// <summary>The component at root[<paramref name="name"/>] as a list, a Sequence expanded into its members.</summary>
    private static List<JsonElement> Flatten(JsonElement root, string name, string sequenceMember) =>
        root.TryGetProperty(name, out var e) ? Flatten(e, sequenceMember) : [];

    private static List<JsonElement> Flatten(JsonElement component, string sequenceMember)
    {
        if (component.ValueKind != JsonValueKind.Object) return [];
        if (TypeOf(component) != "Sequence") return [component];
        return [.. component.GetProperty(sequenceMember).EnumerateArray().SelectMany(c => Flatten(c, sequenceMember))];
    }

    private static string TypeOf(JsonElement component) => component.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";

    private static int CheckedId(int id, string path) =>
        id is >= 0 and < 16_777_216 ? id : throw ShrinkException.InFile(path, $"token id {id} out of range");
}
