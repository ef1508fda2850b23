"""SmoothQuant smoothing (Xiao et al., 2023): move activation outliers into the weights.

For a linear layer fed by a norm (or by another linear), ``y = W x`` equals ``(W diag(s)) (x / s)``.
Dividing the norm's weight by ``s`` and multiplying the linear's input columns by ``s`` leaves the
model's function unchanged in full precision, while per-token int8 activation quantization (what
CTranslate2's int8 GEMMs do on CPU) loses far less. ``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)``,
with activation maxima measured on calibration text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipstream.calibration import Calibration
from slipstream.errors import Unsupported
from slipstream.progress import Progress, or_null
from slipstream.techniques.config import TechniqueConfig


@dataclasses.dataclass(frozen=True)
class SmoothQuant(TechniqueConfig):
    """Smooth activations for W8A8 engines; the model stays full precision."""

    technique = "smoothquant"
    alpha: float = 0.7
    lm_head: bool = False  # also smooth the output projection (unties it from the embeddings: bigger)
    calibration: str = "wikitext2-valid"
    samples: int = 64
    sequence_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            from slipstream.errors import InvalidConfig

            raise InvalidConfig(f"smoothquant: alpha must be in [0, 1], got {self.alpha}")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        return f"sq{self.alpha:g}" + ("-head" if self.lm_head else "")


@dataclass
class Group:
    """Linears that read the same input, and what produces that input (a norm or a linear)."""

    source: Any  # nn.Module: RMSNorm/LayerNorm or nn.Linear
    linears: list[Any]
    norm_offset: float = 0.0  # Gemma's RMSNorm computes (1 + weight) * x
    # v_proj -> o_proj under grouped-query attention: each source channel feeds ``repeat`` consumer
    # channels (one per query head sharing the key/value head), shaped (kv_heads, repeat, head_dim).
    grouped: tuple[int, int, int] | None = None


def smoothing_groups(model: Any, lm_head: bool = False) -> list[Group]:
    """The (source, linears) pairs of a Llama-style decoder (Llama, Mistral, Qwen2, Gemma 1-3)."""
    cfg = model.config
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not hasattr(layers[0], "self_attn") or not hasattr(layers[0].mlp, "up_proj"):
        raise Unsupported(f"smoothquant: no rule for architecture {cfg.model_type!r} (Llama-style decoders only)")
    offset = 1.0 if cfg.model_type.startswith("gemma") else 0.0
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    shape = (kv_heads, cfg.num_attention_heads // kv_heads, head_dim)
    groups = []
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        ffn_norm = getattr(layer, "pre_feedforward_layernorm", None) or layer.post_attention_layernorm
        groups.append(Group(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], offset))
        groups.append(Group(attn.v_proj, [attn.o_proj], grouped=shape))
        groups.append(Group(ffn_norm, [mlp.gate_proj, mlp.up_proj], offset))
        groups.append(Group(mlp.up_proj, [mlp.down_proj]))
    if lm_head:
        if getattr(cfg, "tie_word_embeddings", False):
            import torch

            model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
            cfg.tie_word_embeddings = False
        groups.append(Group(model.model.norm, [model.lm_head], offset))
    return groups


def activation_maxima(model: Any, groups: list[Group], batches) -> list[Any]:
    """Per-input-channel max |x| of each group's input, accumulated over the calibration stream."""
    import torch

    maxima: list[Any] = [None] * len(groups)
    hooks = []
    for i, g in enumerate(groups):
        def hook(_module, args, i=i):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            maxima[i] = x if maxima[i] is None else torch.maximum(maxima[i], x)
        hooks.append(g.linears[0].register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for ids in batches:
                model(input_ids=torch.tensor([ids], device=model.device))
    finally:
        for h in hooks:
            h.remove()
    return maxima


def smooth(model: Any, groups: list[Group], maxima: list[Any], alpha: float) -> None:
    import torch

    with torch.no_grad():
        for g, xmax in zip(groups, maxima):
            wmax = torch.stack([lin.weight.abs().amax(0).float() for lin in g.linears]).amax(0)
            if g.grouped:  # one factor per source channel: the max over the query heads sharing it
                xmax, wmax = (t.view(g.grouped).amax(1).reshape(-1) for t in (xmax, wmax))
            s = (xmax.clamp(min=1e-5).pow(alpha) / wmax.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)
            consumer = s
            if g.grouped:
                kv, rep, hd = g.grouped
                consumer = s.view(kv, 1, hd).expand(kv, rep, hd).reshape(-1)
            src = g.source
            if isinstance(src, torch.nn.Linear):  # the producer's output rows
                src.weight.div_(s[:, None].to(src.weight.dtype))
                if src.bias is not None:
                    src.bias.div_(s.to(src.bias.dtype))
            else:
                w = src.weight
                w.copy_(((w.float() + g.norm_offset) / s - g.norm_offset).to(w.dtype))
                if getattr(src, "bias", None) is not None:
                    src.bias.div_(s.to(src.bias.dtype))
            for lin in g.linears:
                lin.weight.mul_(consumer[None, :].to(lin.weight.dtype))


def calibrate_and_smooth(model: Any, src: Path, calibration: Calibration, alpha: float,
                         progress: Progress | None = None, lm_head: bool = False) -> None:
    """Measure activation maxima on the calibration stream (one sample in memory at a time) and
    smooth ``model`` in place."""
    from slipstream.engines.tokenizer import Tokenizer

    groups = smoothing_groups(model, lm_head)
    tokenizer = Tokenizer.from_dir(src)
    with or_null(progress).task(f"calibrating SmoothQuant on {calibration.source}", total=calibration.samples) as bar:
        def stream():
            for ids in calibration.batches(tokenizer):
                yield ids
                bar.advance()
        maxima = activation_maxima(model, groups, stream())
    smooth(model, groups, maxima, alpha)


def apply(src: Path, out: Path, config: SmoothQuant, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.techniques.hf_io import load_model, save_model

    model = load_model(src, device=device)
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    calibrate_and_smooth(model, src, calibration, config.alpha, progress, config.lm_head)
    save_model(model, src, out)
    return {"calibration_tokens": config.samples * config.sequence_length}
