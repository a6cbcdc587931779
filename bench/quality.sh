#!/bin/bash
# Quality table of the quantization presets on tinylit-8m (docs/BENCHMARKS.md, "Quantization quality (issue 3)").
# usage: bench/quality.sh [OUTDIR] [MAX_CHUNKS]   (run from the repository root after `dotnet build -c Release`)
# Every preset is compressed with the default calibration (128 samples × 256 tokens of tinylit_calib.txt) and
# evaluated at --ctx 256 under both protocols; KL and top-1 agreement are against the F32 model (standard protocol).
set -euo pipefail
out=${1:-/tmp/llmshrink-quality}
max_chunks=${2:-0}
cli=${LLMSHRINK:-"dotnet src/LlmShrink.Cli/bin/Release/net10.0/llmshrink.dll"}
model=../shared/models/tinylit-8m
calib=../shared/corpora/tinylit_calib.txt
data=../shared/corpora/tinylit_eval.txt
limit=(); [ "$max_chunks" -gt 0 ] && limit=(--max-chunks "$max_chunks")
presets=$($cli compress --help | grep -o 'Preset ([^)]*)' | sed 's/Preset (//; s/)//; s/,//g')
mkdir -p "$out"

# A JSON number by key; 0 when absent (F32 has no reference: KL 0).
field() { v=$(grep -o "\"$1\": [0-9.eE+-]*" "$2" | head -1 | sed 's/.*: //'); echo "${v:-0}"; }

echo "| model | ppl standard | ppl llamacpp | KL vs F32 | top-1 agreement | bits/weight (linear) | safetensors bytes | compress s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for preset in F32 $presets; do
  dir=$model; bits=32; seconds=-
  if [ "$preset" != F32 ]; then
    dir=$out/$preset
    if [ ! -f "$dir/report.md" ]; then
      rm -rf "$dir"
      start=$(date +%s.%N)
      $cli compress $model --recipe "$preset" --calib $calib --out "$dir" > "$out/$preset.compress.log" 2>&1
      echo "$(date +%s.%N) - $start" | bc > "$out/$preset.seconds"
    fi
    seconds=$(printf %.0f "$(cat "$out/$preset.seconds")")
    bits=$(grep -o '[0-9.]* bits per weight stored' "$dir/report.md" | cut -d' ' -f1)
  fi
  reference=(--reference $model); [ "$preset" = F32 ] && reference=()
  [ -f "$out/$preset.standard.json" ] || $cli eval "$dir" --data $data --ctx 256 --protocol standard "${reference[@]}" "${limit[@]}" --json > "$out/$preset.standard.json"
  [ -f "$out/$preset.llamacpp.json" ] || $cli eval "$dir" --data $data --ctx 256 --protocol llamacpp "${limit[@]}" --json > "$out/$preset.llamacpp.json"
  bytes=$(cat "$dir"/*.safetensors | wc -c)
  kl=$(printf %.5f "$(field mean_kl_divergence "$out/$preset.standard.json")")
  top1=$(printf %.2f%% "$(field top1_agreement_percent "$out/$preset.standard.json")")
  [ "$preset" = F32 ] && kl=0 && top1=100%
  printf "| %s | %.3f | %.3f | %s | %s | %s | %s | %s |\n" "$preset" \
    "$(field perplexity "$out/$preset.standard.json")" "$(field perplexity "$out/$preset.llamacpp.json")" \
    "$kl" "$top1" "$bits" "$bytes" "$seconds"
done
