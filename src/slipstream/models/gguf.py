"""GGUF files: check them, then dequantize into a plain transformers model saved as safetensors."""

from __future__ import annotations

from pathlib import Path

from slipstream.errors import InvalidModel
from slipstream.extras import require

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def check_gguf(path: Path) -> str:
    """Parse the GGUF header and tensor table; return the architecture it declares."""
    if not is_gguf(path):
        raise InvalidModel(f"{path}: not a GGUF file (bad magic bytes)")
    gguf = require("gguf", "core", "reading GGUF files")
    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode() if field else "unknown"
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    except Exception as exc:  # the reader raises many kinds of errors on damaged files
        raise InvalidModel(f"{path}: corrupt GGUF file ({type(exc).__name__}: {exc})") from exc
    if end > path.stat().st_size:
        raise InvalidModel(f"{path}: corrupt GGUF file (tensor data runs past the end; truncated?)")
    return arch


def gguf_to_safetensors(path: Path, out_dir: Path, dtype: str = "float32") -> None:
    """Dequantize ``path`` with transformers' GGUF loader and save a plain model plus tokenizer."""
    require("accelerate", "core", "loading GGUF files")
    torch = require("torch", "core")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf(path)
    kwargs = {"gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        quantized = AutoModelForCausalLM.from_pretrained(path.parent, dtype=getattr(torch, dtype), **kwargs)
    except Exception as exc:
        raise InvalidModel(f"{path}: transformers cannot read this GGUF ({type(exc).__name__}: {exc})") from exc
    # A model loaded straight from GGUF refuses save_pretrained; rebuild a plain one from its
    # config (without the gguf quantization_config) and move the dequantized weights across.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    with torch.device("meta"):
        plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out_dir)
    _set_special_tokens(tokenizer, path)
    tokenizer.save_pretrained(out_dir)


_SPECIAL_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def _set_special_tokens(tokenizer, path: Path) -> None:
    """Take the special tokens from the GGUF's own metadata: transformers' GGUF tokenizer conversion
    can get them wrong (5.17 turns SmolLM2's eos <|im_end|> into <|im_start|>)."""
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    for attr, key in _SPECIAL_IDS.items():
        field = fields.get(key)
        if field is not None:
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(int(field.contents())))
    add_bos = fields.get("tokenizer.ggml.add_bos_token")
    bos = tokenizer.bos_token
    if add_bos is not None and bool(add_bos.contents()) and bos and tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id]:
        # The GGUF says the model expects BOS first (Gemma); transformers' conversion can drop that.
        from tokenizers import processors

        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)])
    # WordPiece-style clean-up corrupts byte-level BPE output; transformers warns about it on every decode.
    tokenizer.clean_up_tokenization_spaces = False
