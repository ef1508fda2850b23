"""Structured pruning: remove whole decoder layers, MLP channels and attention heads, so the result
is a smaller *dense* Hugging Face model that every engine runs faster (no sparse kernel needed).

What goes is chosen from activations measured on calibration text (WikiText-2 *validation* by
default, never the test text evaluation scores):

* **Decoder layers** (ShortGPT's "block influence"): a layer whose output hidden state is nearly
  the same direction as its input (cosine similarity near 1) changes little; the most similar ones
  are dropped and the rest renumbered.
* **MLP intermediate channels**: channel ``j`` is scored by ``mean |act(gate_j(x)) * up_j(x)|``
  times the norm of ``down_proj``'s column ``j`` (what it adds to the residual stream); every layer
  keeps the same number (the config holds one ``intermediate_size``), rounded to a multiple of 8.
* **Attention heads**: a head is scored by the mean norm of its output (the input of ``o_proj``).
  Grouped-query attention stays valid: with several query heads per key/value head, the same number
  is removed from every group; with one (multi-head attention), whole groups go with their key and
  value heads. ``head_dim`` is kept and written to the config.

Stages run in that order, each measured on the model the previous stage left.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from slipstream.calibration import Calibration
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig

MLP_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class StructuredPrune(TechniqueConfig):
    """Remove a fraction of decoder layers, MLP channels and attention heads (each in [0, 1))."""

    technique = "prune-structured"
    layers: float = 0.25  # fraction of decoder layers to drop
    mlp: float = 0.0  # fraction of MLP intermediate channels to drop in every layer
    heads: float = 0.0  # fraction of attention (query) heads to drop in every layer
    calibration: str = "wikitext2-valid"
    samples: int = 32
    sequence_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("layers", "mlp", "heads"):
            value = getattr(self, field)
            if not 0 <= value < 1:
                raise InvalidConfig(f"prune-structured: {field} must be in [0, 1), got {value}")
        if self.layers == self.mlp == self.heads == 0:
            raise InvalidConfig("prune-structured: nothing to prune; set layers, mlp or heads above 0")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        parts = [f"{name}{round(getattr(self, field) * 100)}" for field, name in
                 (("layers", "l"), ("mlp", "m"), ("heads", "h")) if getattr(self, field)]
        return "prune-" + "-".join(parts)


# --- plans (pure arithmetic, checked before any model is touched) ---------------------------------

def layers_to_keep(n_layers: int, fraction: float) -> int:
    keep = n_layers - round(n_layers * fraction)
    if keep < 1:
        raise InvalidConfig(f"prune-structured: layers={fraction} would remove all {n_layers} layers")
    return keep


def channels_to_keep(width: int, fraction: float) -> int:
    keep = max(MLP_MULTIPLE, round(width * (1 - fraction) / MLP_MULTIPLE) * MLP_MULTIPLE)
    return min(keep, width)


def head_plan(n_heads: int, n_kv: int, fraction: float) -> tuple[int, int]:
    """(query heads kept, key/value heads kept) for removing ``fraction`` of the query heads without
    breaking grouped-query attention; raises when no valid layout removes that many."""
    if n_heads % n_kv:
        raise Unsupported(f"prune-structured: {n_heads} attention heads do not split into {n_kv} key/value groups")
    per_group = n_heads // n_kv
    if per_group > 1:  # grouped-query: the same count out of every group, key/value heads stay
        keep_per_group = per_group - round(per_group * fraction)
        if keep_per_group < 1 or keep_per_group == per_group:
            raise InvalidConfig(
                f"prune-structured: heads={fraction} does not fit the attention layout ({n_heads} query heads in "
                f"{n_kv} key/value groups of {per_group}); the same number must go from every group, at least 1 "
                f"and at most {per_group - 1}: heads from {1 / per_group:.2f} to {(per_group - 1) / per_group:.2f}")
        return keep_per_group * n_kv, n_kv
    keep = n_kv - round(n_kv * fraction)  # multi-head: whole groups (query + key + value) go
    if keep < 1 or keep == n_kv:
        raise InvalidConfig(f"prune-structured: heads={fraction} of {n_heads} heads removes "
                            f"{n_heads - max(keep, 0)}; must remove at least 1 and keep at least 1")
    return keep, keep


# --- measurements -----------------------------------------------------------------------------------

def _hidden(x: Any) -> Any:
    return x[0] if isinstance(x, (tuple, list)) else x


def _run(model: Any, batches: list[Any], hooks: list[Any]) -> None:
    """Run the calibration batches through ``model``, then remove ``hooks`` (even on failure)."""
    import torch

    try:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()


def layer_similarity(model: Any, batches: list[Any]) -> list[float]:
    """Mean cosine similarity between each decoder layer's input and output hidden states."""
    import torch

    layers = model.model.layers
    sums = [0.0] * len(layers)
    counts = [0] * len(layers)
    hooks = []
    for i, layer in enumerate(layers):
        def hook(module, args, kwargs, output, i=i):
            x = kwargs.get("hidden_states", args[0] if args else None)
            y = _hidden(output)
            cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            sums[i] += cos.sum().item()
            counts[i] += cos.numel()
        hooks.append(layer.register_forward_hook(hook, with_kwargs=True))
    _run(model, batches, hooks)
    return [s / max(c, 1) for s, c in zip(sums, counts)]


def mlp_scores(model: Any, batches: list[Any]) -> list[Any]:
    """Per layer, a score for every MLP intermediate channel (the input of ``down_proj``)."""
    import torch

    layers = model.model.layers
    sums = [torch.zeros(layer.mlp.down_proj.in_features) for layer in layers]
    counts = [0] * len(layers)
    hooks = []
    for i, layer in enumerate(layers):
        def hook(module, args, i=i):
            a = args[0].detach().float().abs().reshape(-1, args[0].shape[-1])
            sums[i] += a.sum(0)
            counts[i] += a.shape[0]
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(hook))
    _run(model, batches, hooks)
    return [s / max(c, 1) * layer.mlp.down_proj.weight.detach().float().norm(dim=0)
            for s, c, layer in zip(sums, counts, layers)]


def head_scores(model: Any, batches: list[Any], n_heads: int, head_dim: int) -> list[Any]:
    """Per layer, the mean output norm of each query head (measured at the input of ``o_proj``)."""
    import torch

    layers = model.model.layers
    sums = [torch.zeros(n_heads) for _ in layers]
    hooks = []
    for i, layer in enumerate(layers):
        def hook(module, args, i=i):
            a = args[0].detach().float()
            sums[i] += a.reshape(-1, n_heads, head_dim).norm(dim=-1).sum(0)
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(hook))
    _run(model, batches, hooks)
    return sums


# --- surgery ----------------------------------------------------------------------------------------

def _slice_linear(linear: Any, index: Any, dim: int) -> Any:
    """A new Linear keeping ``index`` along the weight's ``dim`` (0: outputs, 1: inputs)."""
    import torch

    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None:
        bias = bias.detach().index_select(0, index).clone() if dim == 0 else bias.detach().clone()
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype,
                          device=weight.device)
    new.weight = torch.nn.Parameter(weight)
    if bias is not None:
        new.bias = torch.nn.Parameter(bias)
    return new


def drop_layers(model: Any, drop: list[int]) -> None:
    import torch

    keep = [i for i in range(len(model.model.layers)) if i not in set(drop)]
    model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in keep])
    for new_index, layer in enumerate(model.model.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = model.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    if getattr(config, "max_window_layers", None) is not None:
        config.max_window_layers = min(config.max_window_layers, len(keep))


def prune_mlp(model: Any, scores: list[Any], keep: int) -> None:
    import torch

    for layer, score in zip(model.model.layers, scores):
        index = torch.sort(torch.topk(score, keep).indices).values
        mlp = layer.mlp
        mlp.gate_proj = _slice_linear(mlp.gate_proj, index, 0)
        mlp.up_proj = _slice_linear(mlp.up_proj, index, 0)
        mlp.down_proj = _slice_linear(mlp.down_proj, index, 1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = keep
    model.config.intermediate_size = keep


def prune_heads(model: Any, scores: list[Any], n_heads: int, n_kv: int, head_dim: int,
                keep_heads: int, keep_kv: int) -> None:
    import torch

    per_group = n_heads // n_kv
    for layer, score in zip(model.model.layers, scores):
        groups = score.reshape(n_kv, per_group)
        if keep_kv == n_kv:  # same number of query heads out of every group
            per = keep_heads // n_kv
            q_heads = [g * per_group + int(h) for g in range(n_kv)
                       for h in torch.sort(torch.topk(groups[g], per).indices).values]
            kv_heads = list(range(n_kv))
        else:  # whole groups, ranked by their summed score
            kv_heads = sorted(torch.topk(groups.sum(1), keep_kv).indices.tolist())
            q_heads = [g * per_group + h for g in kv_heads for h in range(per_group)]

        def rows(heads: list[int]) -> Any:
            return torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)], dtype=torch.long)

        attn = layer.self_attn
        attn.q_proj = _slice_linear(attn.q_proj, rows(q_heads), 0)
        attn.k_proj = _slice_linear(attn.k_proj, rows(kv_heads), 0)
        attn.v_proj = _slice_linear(attn.v_proj, rows(kv_heads), 0)
        attn.o_proj = _slice_linear(attn.o_proj, rows(q_heads), 1)
        for name, value in (("num_heads", keep_heads), ("num_key_value_heads", keep_kv),
                            ("num_key_value_groups", keep_heads // keep_kv)):
            if hasattr(attn, name):
                setattr(attn, name, value)
    config = model.config
    config.num_attention_heads = keep_heads
    config.num_key_value_heads = keep_kv
    config.head_dim = head_dim


# --- the technique ----------------------------------------------------------------------------------

def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def check_plan(model: Any, config: StructuredPrune) -> tuple[int, tuple[int, int], tuple[int, int, int]]:
    """Check the plan against the model's shape before anything is measured: (layers kept,
    (heads kept, key/value heads kept), (heads, key/value heads, head_dim))."""
    cfg = model.config
    if not hasattr(model, "model") or not hasattr(model.model, "layers"):
        raise Unsupported(f"prune-structured: {type(model).__name__} has no model.layers decoder stack")
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    keep_layers = layers_to_keep(cfg.num_hidden_layers, config.layers) if config.layers else cfg.num_hidden_layers
    heads = head_plan(n_heads, n_kv, config.heads) if config.heads else (n_heads, n_kv)
    return keep_layers, heads, (n_heads, n_kv, head_dim)


def prune_model(model: Any, config: StructuredPrune, batches: list[Any], progress: Progress | None = None) -> dict:
    """Prune ``model`` in place; returns what was removed (for the manifest)."""
    progress = or_null(progress)
    cfg = model.config
    keep_layers, (keep_heads, keep_kv), (n_heads, n_kv, head_dim) = check_plan(model, config)
    n_layers = cfg.num_hidden_layers
    before = parameter_count(model)
    facts: dict[str, Any] = {"parameters_before": before}
    if config.layers:
        with progress.task("measuring layer similarity"):
            sim = layer_similarity(model, batches)
        drop = sorted(sorted(range(n_layers), key=lambda i: -sim[i])[: n_layers - keep_layers])
        drop_layers(model, drop)
        facts["layers"] = {"before": n_layers, "after": keep_layers, "dropped": drop,
                           "similarity": [round(s, 4) for s in sim]}
    if config.mlp:
        width = cfg.intermediate_size
        keep = channels_to_keep(width, config.mlp)
        with progress.task("measuring MLP channel importance"):
            scores = mlp_scores(model, batches)
        prune_mlp(model, scores, keep)
        facts["mlp"] = {"before": width, "after": keep}
    if config.heads:
        with progress.task("measuring attention head importance"):
            scores = head_scores(model, batches, n_heads, head_dim)
        prune_heads(model, scores, n_heads, n_kv, head_dim, keep_heads, keep_kv)
        facts["heads"] = {"before": n_heads, "after": keep_heads, "kv_before": n_kv, "kv_after": keep_kv,
                          "head_dim": head_dim}
    after = parameter_count(model)
    facts |= {"parameters": after, "parameter_ratio": round(after / before, 4)}
    return facts


def calibration_batches(src: Path, calibration: Calibration) -> list[Any]:
    from slipstream.techniques.quantize.llmc import calibration_loader

    return [batch["input_ids"] for batch in calibration_loader(src, calibration)]


def apply(src: Path, out: Path, config: StructuredPrune, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.models.tasks import ENCODER_TASKS, detect
    from slipstream.techniques.hf_io import load_model, save_model

    if detect(src) in ENCODER_TASKS:
        from slipstream.techniques.prune import encoder

        return encoder.apply(src, out, config, device, progress)
    progress = or_null(progress)
    model = load_model(src, device=device)
    check_plan(model, config)
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    with progress.task(f"reading calibration text ({calibration.source})"):
        batches = [b.to(device) for b in calibration_batches(src, calibration)]
    facts = prune_model(model, config, batches, progress)
    with progress.task("saving the pruned model"):
        save_model(model, src, out)
    facts["calibration"] = {"source": calibration.source, "samples": calibration.samples,
                            "sequence_length": calibration.sequence_length}
    facts["engines"] = "a smaller dense model: every engine (transformers, CTranslate2, ...) runs it as is"
    return facts
