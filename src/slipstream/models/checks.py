"""Checks on a Hugging Face model directory, done before anything heavy is loaded.

Each failure is one line that names the problem: not a directory, not a model, a corrupt
safetensors file, pickle-only weights, or remote code.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from slipstream.errors import InvalidModel, NotFound, UnsafeModel

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",  # Marian (OPUS-MT): one sentencepiece model per side, beside vocab.json
    "target.spm",
)
CONFIG_FILES = ("config.json", "generation_config.json")
# A sentence-transformers pipeline around an encoder: its pooling and normalisation (engines/pooling.py).
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                  "1_Pooling/config.json")


def copy_sentence_files(src: Path, dest: Path) -> None:
    """Copy an embedding model's sentence-transformers files (pooling, normalisation) from ``src`` to ``dest``."""
    import shutil

    for name in SENTENCE_FILES:
        if (src / name).exists() and not (dest / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dest / name)


@dataclass(frozen=True)
class ModelDirInfo:
    path: Path
    config: dict
    safetensors: tuple[Path, ...]
    pickles: tuple[Path, ...]

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else str(self.config.get("model_type", "unknown"))

    @property
    def remote_code(self) -> bool:
        return bool(self.config.get("auto_map"))


def inspect_model_dir(path: Path) -> ModelDirInfo:
    if not path.exists():
        raise NotFound(f"{path}: no such file or directory")
    if not path.is_dir():
        raise InvalidModel(f"{path}: not a directory (expected a Hugging Face model directory or a .gguf file)")
    config_path = path / "config.json"
    if not config_path.exists():
        raise InvalidModel(f"{path}: not a model directory (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{config_path}: corrupt config.json ({exc})") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise InvalidModel(f"{config_path}: not a transformers config (no model_type)")
    safetensors = tuple(sorted(path.glob("*.safetensors")))
    pickles = tuple(sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file()))
    if not safetensors and not pickles:
        raise InvalidModel(f"{path}: no weights found (no *.safetensors, no pytorch_model.bin)")
    for f in safetensors:
        check_safetensors(f)
    return ModelDirInfo(path, config, safetensors, pickles)


def check_loadable(info: ModelDirInfo, *, allow_pickle: bool, trust_remote_code: bool) -> None:
    if info.remote_code and not trust_remote_code:
        raise UnsafeModel(
            f"{info.path}: the model's config asks to run its own Python code (auto_map); "
            "pass --trust-remote-code to allow it"
        )
    if not info.safetensors and not allow_pickle:
        names = ", ".join(p.name for p in info.pickles)
        raise UnsafeModel(
            f"{info.path}: only pickle weights ({names}), which can run arbitrary code when loaded; "
            "pass --allow-pickle if you trust the source"
        )


def safetensors_header(path: Path) -> dict:
    """Parse a safetensors header, checking that the file is as long as the header says."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or n > min(size - 8, 100 << 20):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{path}: corrupt safetensors file ({exc})") from exc
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise InvalidModel(f"{path}: corrupt safetensors file (bad entry for tensor {name!r})") from exc
    if 8 + n + end != size:
        raise InvalidModel(
            f"{path}: corrupt safetensors file (header says {8 + n + end} bytes, file has {size}; truncated?)"
        )
    return header


def check_safetensors(path: Path) -> None:
    safetensors_header(path)


def count_parameters(files: tuple[Path, ...] | list[Path]) -> int:
    """Parameters stored in safetensors files, read from their headers (no tensor is loaded)."""
    total = 0
    for f in files:
        for name, meta in safetensors_header(f).items():
            if name == "__metadata__":
                continue
            n = 1
            for d in meta["shape"]:
                n *= int(d)
            total += n
    return total
