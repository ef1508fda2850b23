"""Encoders whose attention heads were pruned, loaded back.

transformers no longer prunes heads itself, and a BERT config cannot say "fewer heads of the same size" (its
head size is ``hidden_size / num_attention_heads``). A head-pruned encoder therefore records how many heads
each layer kept (``slipstream_kept_heads`` in its config.json) and is loaded here: the model is built from its
config, each layer's query/key/value and output projections shrunk to the heads kept, then the saved weights
loaded into it, every tensor accounted for. The attention code reads the head count from the projections'
size, so the pruned model runs unchanged. Every other model goes straight to ``from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slipstream.errors import InvalidModel, Unsupported

KEY = "slipstream_kept_heads"


def kept_heads(path: Path) -> dict[str, int] | None:
    config = Path(path) / "config.json"
    return json.loads(config.read_text()).get(KEY) if config.exists() else None


def attention_parts(layer: Any) -> tuple[Any, tuple[str, ...], Any, str]:
    """(the self-attention module, its q/k/v names, the output projection's parent, its name)."""
    attention = layer.attention
    if hasattr(attention, "self") and hasattr(attention.self, "query"):  # BERT, RoBERTa, XLM-R, ELECTRA
        return attention.self, ("query", "key", "value"), attention.output, "dense"
    raise Unsupported(f"pruning attention heads of {type(layer).__name__} is not supported (BERT-family "
                      "encoders only; MPNet shares one relative position bias across its layers' heads)")


def shrink(layer: Any, head_dim: int, keep: list[int]) -> None:
    """Keep only the heads ``keep`` of ``layer`` (weights sliced; with ``keep`` as a count, empty layers)."""
    import torch

    attn, qkv, parent, out_name = attention_parts(layer)
    index = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in keep])
    for name in qkv:
        old = getattr(attn, name)
        new = torch.nn.Linear(old.in_features, len(index), bias=old.bias is not None, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(old.weight[index])
            if old.bias is not None:
                new.bias.copy_(old.bias[index])
        setattr(attn, name, new)
    old = getattr(parent, out_name)
    new = torch.nn.Linear(len(index), old.out_features, bias=old.bias is not None, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:, index])
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, out_name, new)
    attn.num_attention_heads = len(keep)
    attn.all_head_size = len(index)


def load_pretrained(path: Path, task: str, dtype: Any = None, **kwargs: Any) -> Any:
    """``from_pretrained`` for the model in ``path``, head-pruned encoders included."""
    from slipstream.models.tasks import auto_class

    cls = auto_class(task)
    kept = kept_heads(path)
    if not kept:
        return cls.from_pretrained(path, dtype=dtype, **kwargs)
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    model = cls.from_config(config, **({"attn_implementation": kwargs["attn_implementation"]}
                                       if "attn_implementation" in kwargs else {}))
    base = getattr(model, model.base_model_prefix, model)
    head_dim = config.hidden_size // config.num_attention_heads
    for i, layer in enumerate(base.encoder.layer):
        shrink(layer, head_dim, list(range(int(kept[str(i)]))))
    state: dict[str, Any] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        state |= load_file(str(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "pooler" not in k and "position_ids" not in k]
    if missing or unexpected:
        raise InvalidModel(f"{Path(path).name}: its weights do not fit its pruned heads "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
