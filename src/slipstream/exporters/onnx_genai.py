"""The ONNX Runtime GenAI layout beside ``model.onnx``: ``genai_config.json`` and the tokenizer files at the
top of the variant directory, so ``onnxruntime_genai.Model(variant_dir)`` runs the variant with its own
tokenizer and generation loop.

slipstream's graph already has the inputs and outputs GenAI's decoder expects (``input_ids``,
``attention_mask``, ``position_ids``, one past key and value per layer in, ``logits`` and the presents out);
the config names them. The past grows by concatenation inside the graph, so GenAI must not share one
buffer between past and present (``past_present_share_buffer: false``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

GENAI_CONFIG = "genai_config.json"
# GenAI's tokenizer reads these from the directory it loads the model from
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


# as GenAI's own builder names them: the architecture up to "For", lower case, but for these
_TYPES = {"Gemma3ForCausalLM": "gemma3_text"}


def _first(value):
    return value[0] if isinstance(value, list) else value


def write(cfg: dict[str, Any], src: Path, out: Path, model_file: str) -> dict:
    """Write ``genai_config.json`` for ``out/model_file`` from the model's transformers config ``cfg`` (the
    text decoder's) and link the tokenizer files of ``src`` beside it; return what was written."""
    generation = json.loads((src / "generation_config.json").read_text()) \
        if (src / "generation_config.json").exists() else {}
    heads = cfg["num_attention_heads"]
    eos = generation.get("eos_token_id", cfg.get("eos_token_id"))
    architecture = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
    model_type = _TYPES.get(architecture) or architecture[:architecture.find("For")].lower()
    context = cfg.get("max_position_embeddings", 2048)
    config = {
        "model": {
            "type": model_type,
            "bos_token_id": _first(generation.get("bos_token_id", cfg.get("bos_token_id"))),
            "eos_token_id": eos,
            "pad_token_id": _first(generation.get("pad_token_id", cfg.get("pad_token_id", _first(eos)))),
            "vocab_size": cfg["vocab_size"],
            "context_length": context,
            "decoder": {
                "filename": model_file,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": cfg.get("head_dim") or cfg["hidden_size"] // heads,
                "hidden_size": cfg["hidden_size"],
                "num_attention_heads": heads,
                "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
                "num_hidden_layers": cfg["num_hidden_layers"],
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids",
                           "past_key_names": "past.%d.key", "past_value_names": "past.%d.value"},
                "outputs": {"logits": "logits",
                            "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "max_length": context, "num_beams": 1, "num_return_sequences": 1,
                   "past_present_share_buffer": False, "top_k": 1, "top_p": 1.0, "temperature": 1.0,
                   "repetition_penalty": 1.0, "length_penalty": 1.0, "early_stopping": True,
                   "min_length": 0, "no_repeat_ngram_size": 0, "diversity_penalty": 0.0}}
    (out / GENAI_CONFIG).write_text(json.dumps(config, indent=2))
    linked = []
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            try:  # the same bytes as tokenizer/'s copy: a hard link where the filesystem allows one
                os.link(out / "tokenizer" / name, out / name)
            except OSError:
                shutil.copy2(src / name, out / name)
            linked.append(name)
    return {"onnxruntime_genai": {"config": GENAI_CONFIG, "type": model_type, "tokenizer_files": linked}}
