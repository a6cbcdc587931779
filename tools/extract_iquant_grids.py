#!/usr/bin/env python3
"""Regenerates the I-quant codebooks under src/LlmShrink.Core/Formats/IQuantGrids/ from a llama.cpp checkout.

The grids are part of the ggml I-quant formats: a block stores indices into them, and ggml-common.h defines their
contents (GGML_TABLE_BEGIN(type, name, size) ... GGML_TABLE_END()). This script reads those tables and writes each
as the little-endian bytes of its elements, i.e. exactly the memory llama.cpp indexes: entry i of a uint64 grid is
bytes 8i..8i+7, entry i of a uint32 grid bytes 4i..4i+3. The files in the repository were made from commit c392e50:

    python3 tools/extract_iquant_grids.py /path/to/llama.cpp
"""
import re
import struct
import sys
from pathlib import Path

GRIDS = ["iq2xxs_grid", "iq2xs_grid", "iq2s_grid", "iq3xxs_grid", "iq3s_grid", "iq1s_grid"]
WIDTHS = {"uint32_t": "I", "uint64_t": "Q"}


def table(header: str, name: str) -> tuple[str, list[int]]:
    """The element type and values of the first table called name (the CPU one; iq1s_grid_gpu is another name)."""
    match = re.search(r"GGML_TABLE_BEGIN\((\w+),\s*" + name + r",\s*(\w+)\)(.*?)GGML_TABLE_END\(\)", header, re.S)
    if match is None:
        sys.exit(f"{name}: not found in ggml-common.h")
    element_type, _, body = match.groups()
    values = [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\d+", body)]
    return element_type, values


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: extract_iquant_grids.py LLAMA_CPP_DIR")
    header = (Path(sys.argv[1]) / "ggml" / "src" / "ggml-common.h").read_text()
    out = Path(__file__).resolve().parent.parent / "src" / "LlmShrink.Core" / "Formats" / "IQuantGrids"
    out.mkdir(exist_ok=True)
    for name in GRIDS:
        element_type, values = table(header, name)
        data = struct.pack("<" + WIDTHS[element_type] * len(values), *values)
        (out / f"{name}.bin").write_bytes(data)
        print(f"{name}: {len(values)} x {element_type} -> {len(data)} bytes")


if __name__ == "__main__":
    main()
