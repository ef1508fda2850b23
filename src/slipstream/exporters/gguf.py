"""GGUF export for llama.cpp: write the model as an F32 GGUF, then quantize it with llama.cpp's own
quantizer (``llama_model_quantize``) to Q8_0 or a K-quant mix (Q5_K_M, Q4_K_M, ...).

The F32 file is written here with PyPI's ``gguf`` writer rather than llama.cpp's
``convert_hf_to_gguf.py``: that script is not installed by any package (it ships only in the
llama-cpp-python sdist), needs the gguf-py of its own llama.cpp checkout, and requires the
SentencePiece ``tokenizer.model`` that a model imported from GGUF does not have. The writer below
covers the architectures slipstream supports for GGUF (the Llama family and Gemma 3 text) and
refuses every other one before any work. It reproduces the converter's layout: GGUF tensor names,
Llama's interleaved rotary layout for q/k, Gemma's ``1 + weight`` norms, and the tokenizer (byte-level
BPE as ``gpt2`` with merges and llama.cpp's name for its pre-tokenizer, SentencePiece as ``llama`` with
scores), so that llama.cpp's own tokenizer splits text exactly as the model's does.

The variant directory holds ``model.gguf`` and a ``tokenizer/`` folder with the parent's tokenizer
and config.json: slipstream's llama.cpp engine tokenizes with the model's own tokenizer, so every
engine sees the same token ids.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from slipstream.errors import InvalidModel, Unsupported
from slipstream.exporters.files import copy_tokenizer
from slipstream.extras import require
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig

Quantization = Literal["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0"]
QUANTIZATIONS: tuple[str, ...] = Quantization.__args__  # type: ignore[attr-defined]
MODEL_FILE = "model.gguf"
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "gemma3_text": "gemma3"}


@dataclasses.dataclass(frozen=True)
class GGUF(TechniqueConfig):
    """Export to GGUF for llama.cpp with weight type ``quantization``."""

    technique = "gguf"
    quantization: Quantization = "Q4_K_M"

    def slug(self) -> str:
        return f"gguf-{self.quantization.lower()}"


# --- checks ----------------------------------------------------------------------------------------

def read_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.exists():
        raise InvalidModel(f"{src}: no config.json")
    cfg = json.loads(path.read_text())
    return cfg.get("text_config", cfg) if cfg.get("model_type") == "gemma3" else cfg


def _rope_theta(cfg: dict, layer_type: str | None = None) -> float:
    params = cfg.get("rope_parameters") or {}
    if layer_type and layer_type in params:
        params = params[layer_type]
    scaling = cfg.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise Unsupported(f"GGUF export: rotary scaling {rope_type!r} is not supported by slipstream's GGUF writer")
    return float(params.get("rope_theta") or cfg.get("rope_theta") or 10000.0)


def check_model(src: Path) -> str:
    """Refuse what the writer cannot convert faithfully; return the GGUF architecture name."""
    cfg = read_config(src)
    model_type = cfg.get("model_type")
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise Unsupported(f"GGUF export supports {', '.join(sorted(ARCHITECTURES))} models; "
                          f"{src.name} is {model_type!r}")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise Unsupported("GGUF export: attention/MLP biases are not supported")
    if model_type == "mistral" and cfg.get("sliding_window"):
        raise Unsupported("GGUF export: Mistral sliding-window attention is not supported")
    if arch == "llama":
        _rope_theta(cfg)
        if cfg.get("hidden_act", "silu") != "silu":
            raise Unsupported(f"GGUF export: Llama with activation {cfg.get('hidden_act')!r} is not supported")
    else:
        n = cfg["num_hidden_layers"]
        pattern = [(i + 1) % 6 != 0 for i in range(n)]  # llama.cpp's Gemma 3: 5 sliding layers, then 1 full
        layer_types = cfg.get("layer_types") or []
        if layer_types and [t == "sliding_attention" for t in layer_types] != pattern:
            raise Unsupported("GGUF export: llama.cpp's Gemma 3 needs 5 sliding-window layers per full layer")
        if _rope_theta(cfg, "sliding_attention") != 10000.0:
            raise Unsupported("GGUF export: llama.cpp's Gemma 3 fixes the sliding layers' rope base at 10000")
        _rope_theta(cfg, "full_attention")
        if cfg.get("final_logit_softcapping") or cfg.get("attn_logit_softcapping"):
            raise Unsupported("GGUF export: Gemma 3 with logit soft-capping is not supported")
        if cfg.get("query_pre_attn_scalar", cfg["head_dim"]) != cfg["head_dim"]:
            raise Unsupported("GGUF export: Gemma 3 with query_pre_attn_scalar != head_dim is not supported")
    if not (src / "tokenizer.json").exists():
        raise Unsupported("GGUF export needs the model's tokenizer.json")
    vocabulary_kind(src)
    return arch


# --- writing an F32/F16 GGUF -------------------------------------------------------------------------

def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """HF rotary layout (halves) -> llama.cpp's (interleaved pairs), as convert_hf_to_gguf does."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(src: Path) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise InvalidModel(f"{src}: no safetensors weights")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name).float().numpy()


def vocabulary_kind(src: Path) -> tuple[str, str]:
    """llama.cpp's vocabulary type and pre-tokenizer name for the model's tokenizer.json, as its converter
    writes them: byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen2) as ``gpt2`` with the name of the rule
    llama.cpp splits text by; SentencePiece (Unigram, or BPE with byte fallback: Gemma, Llama 2) as
    ``llama``. Refuses a tokenizer llama.cpp would split differently."""
    from slipstream.models.gguf_vocab import is_byte_level, pre_tokenizer_name

    data = json.loads((src / "tokenizer.json").read_text())
    model = data["model"]
    if model["type"] == "BPE" and is_byte_level(data):
        # a byte fallback (which transformers' GGUF import adds) is never used by a byte-level vocabulary
        config_path = src / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        return "gpt2", pre_tokenizer_name(data, bool(config.get("clean_up_tokenization_spaces", False)))
    if model["type"] == "Unigram" or (model["type"] == "BPE" and model.get("byte_fallback")):
        return "llama", "default"
    raise Unsupported(f"GGUF export: a {model['type']} tokenizer without byte-level pre-tokenization or byte "
                      "fallback has no llama.cpp vocabulary type")


def _tokenizer_fields(src: Path, writer: Any, vocab_size: int) -> None:
    import gguf

    from slipstream.tokenizer import Tokenizer

    kind, pre = vocabulary_kind(src)
    data = json.loads((src / "tokenizer.json").read_text())
    model = data["model"]
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    if model["type"] == "BPE":
        vocab = model["vocab"]
        tokens = [""] * max(vocab_size, len(vocab), max(added, default=0) + 1)
        for text, i in vocab.items():
            tokens[i] = text
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        scores = None
        if kind == "llama":  # llama.cpp merges SentencePiece pieces in order of the merged piece's score:
            # minus the rank of its first merge
            scores = [-1e9] * len(tokens)
            for rank, merge in reversed(list(enumerate(merges))):
                piece = merge.replace(" ", "", 1)
                if piece in vocab:
                    scores[vocab[piece]] = -float(rank)
            merges = None
    else:
        pairs = model["vocab"]
        tokens = [""] * max(vocab_size, len(pairs), max(added, default=0) + 1)
        scores = [0.0] * len(tokens)
        for i, (text, score) in enumerate(pairs):
            tokens[i], scores[i] = text, float(score)
        merges = None
    types = []
    byte = re.compile(r"^<0x[0-9A-F]{2}>$")
    for i, text in enumerate(tokens):
        if i in added:
            tokens[i] = added[i]["content"]
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        elif not text:
            tokens[i] = f"[PAD{i}]"
            types.append(gguf.TokenType.UNUSED)
        elif kind == "llama" and model.get("byte_fallback") and byte.match(text):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    if len(tokens) > vocab_size:
        raise Unsupported(f"GGUF export: the tokenizer has {len(tokens)} tokens but the embedding only {vocab_size}")
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is not None:
        writer.add_token_scores(scores)
    if merges is not None:
        writer.add_token_merges(merges)
    tok = Tokenizer.from_dir(src)
    bos = tok.token_id(tok.special["bos_token"]) if "bos_token" in tok.special else None
    if bos is not None:
        writer.add_bos_token_id(bos)
    if tok.eos_token_ids:
        writer.add_eos_token_id(tok.eos_token_ids[0])
    if "unk_token" in tok.special and tok.token_id(tok.special["unk_token"]) is not None:
        writer.add_unk_token_id(tok.token_id(tok.special["unk_token"]))
    writer.add_pad_token_id(tok.pad_token_id)
    probe = tok.encode("a")
    writer.add_add_bos_token(bool(probe) and bos is not None and probe[0] == bos)
    writer.add_add_eos_token(False)
    if kind == "llama":  # Llama 2 prepends "▁" to the text, Gemma does not
        writer.add_add_space_prefix('"Prepend"' in json.dumps(data.get("normalizer")) or
                                    '"always"' in json.dumps(data.get("pre_tokenizer")))
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)


def write_gguf(src: Path, path: Path, dtype: Literal["F32", "F16"] = "F32", vocab_only: bool = False) -> dict[str, Any]:
    """Write the transformers model in ``src`` as a GGUF file with float weights; with ``vocab_only``, only
    its metadata and vocabulary (as llama.cpp's converter's ``--vocab-only``: enough for llama.cpp's
    tokenizer, no weights read)."""
    gguf = require("gguf", "core", "GGUF export")
    arch = check_model(src)
    cfg = read_config(src)
    n_layers = cfg["num_hidden_layers"]
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(cfg.get("_name_or_path") or src.name)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_vocab_size(cfg["vocab_size"])
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(_rope_theta(cfg))
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_freq_base(_rope_theta(cfg, "full_attention"))
        writer.add_sliding_window(cfg["sliding_window"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "F32" else gguf.LlamaFileType.MOSTLY_F16)
    _tokenizer_fields(src, writer, cfg["vocab_size"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.GEMMA3, n_layers)
    tied = cfg.get("tie_word_embeddings", arch == "gemma3")
    count = 0
    for name, w in () if vocab_only else _tensors(src):
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise Unsupported(f"GGUF export: no GGUF name for tensor {name!r}")
        if arch == "llama" and name.endswith("q_proj.weight"):
            w = _permute(w, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            w = _permute(w, kv_heads)
        if arch == "gemma3" and name.endswith("norm.weight"):
            w = w + 1.0  # Gemma's RMSNorm scales by (1 + weight); llama.cpp stores the sum
        w = np.ascontiguousarray(w.astype(np.float16 if dtype == "F16" and w.ndim == 2 else np.float32))
        writer.add_tensor(new, w)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": arch, "tensors": count}


# --- quantizing with llama.cpp -----------------------------------------------------------------------

def quantize(inp: Path, out: Path, quantization: str, threads: int = 0) -> None:
    llama_cpp = require("llama_cpp", "llamacpp", "GGUF quantization (llama.cpp)")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantization}")
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(str(inp).encode(), str(out).encode(), params)
    if code != 0:
        raise Unsupported(f"llama.cpp could not quantize to {quantization} (llama_model_quantize returned {code})")


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGML type the file holds (K-quant mixes fall back on narrow rows)."""
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return dict(sorted(counts.items()))


def export(src: Path, out: Path, config: GGUF, device: str = "cpu", progress: Progress | None = None) -> dict:
    if device != "cpu":
        raise Unsupported(f"GGUF export runs on cpu (llama.cpp here is a CPU build), not {device}")
    check_model(src)
    if config.quantization not in ("F32", "F16"):
        require("llama_cpp", "llamacpp", "GGUF quantization (llama.cpp)")
    progress = or_null(progress)
    target = out / MODEL_FILE
    facts: dict[str, Any] = {}
    if config.quantization in ("F32", "F16"):
        with progress.task(f"writing GGUF {config.quantization}"):
            facts |= write_gguf(src, target, config.quantization)
    else:
        staging = out / "f32.gguf.tmp"
        try:
            with progress.task("writing GGUF F32"):
                facts |= write_gguf(src, staging, "F32")
            with progress.task(f"quantizing GGUF to {config.quantization} with llama.cpp"):
                quantize(staging, target, config.quantization)
        finally:
            staging.unlink(missing_ok=True)
    copy_tokenizer(src, out)
    from slipstream.extras import version_of

    return facts | {"tensor_types": tensor_types(target), "llama_cpp_python": version_of("llama_cpp_python")}
