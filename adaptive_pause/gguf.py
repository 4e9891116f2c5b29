"""`adaptive-pause import-gguf FILE --output_dir DIR`: a GGUF file becomes a plain HF model directory.

Owns: reading a GGUF file through transformers (`from_pretrained(dir, gguf_file=name)`, which dequantizes the
weights to fp32; it needs the `gguf` package) and writing model + tokenizer with `save_pretrained`, so every
stage can take DIR as its base like any HF directory.

Must not: add `<pause>` or pause settings (loading the directory as a base does that), or train.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .checkpoint import atomic_dir


def import_gguf(gguf_file: str | Path, output_dir: str | Path) -> Path:
    """Dequantize `gguf_file` (any architecture transformers reads from GGUF) into the HF directory `output_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(gguf_file).expanduser()
    if not source.is_file():
        raise ValueError(f"{source}: no such GGUF file")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output_dir: {out} exists and is not empty; choose a new directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    except ImportError as err:
        raise ValueError(f"{source}: reading GGUF needs the gguf package (pip install gguf): {err}") from err
    except Exception as err:  # noqa: BLE001 - transformers raises several types; re-raised with the file named
        raise ValueError(f"{source}: not a GGUF file transformers can read: {type(err).__name__}: {err}") from err
    # transformers keeps the GGUF quantizer attached although the weights are plain fp32 after loading, and then
    # refuses to save ("quantized with gguf and is not serializable"): the dequantized model is an ordinary one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for flag in ("is_quantized", "quantization_method"):
        if flag in vars(model):
            delattr(model, flag)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptive-pause import-gguf",
                                     description="Turn a GGUF file into a plain HF model directory (fp32 weights).")
    parser.add_argument("gguf_file", help="the .gguf file (needs `pip install gguf`)")
    parser.add_argument("--output_dir", required=True, help="new directory for the HF model and tokenizer")
    args = parser.parse_args(argv)
    out = import_gguf(args.gguf_file, args.output_dir)
    print(f"import-gguf: wrote {out} (use it as --base_model / model.name_or_path)")
    return 0
