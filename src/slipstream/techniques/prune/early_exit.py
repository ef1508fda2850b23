"""Early exit: keep the first ``L`` decoder layers, then the model's own final norm and LM head.

The last layers are skipped for every token (a static layer skip, not per-token adaptive exit), so the
result is a smaller *dense* Hugging Face checkpoint with ``num_hidden_layers = L`` that every engine runs
as is (transformers, CTranslate2, ONNX, GGUF). It is lossy: the search keeps it only where the accuracy
gate holds.

The exit is chosen on calibration text (WikiText-2 *validation* by default, never the test text), in one
forward pass per sample with ``output_hidden_states``: for every candidate exit ``L`` the next-token
distribution of ``lm_head(norm(h_L))`` is compared with the full model's by its mean KL divergence
``KL(full || exit)`` over all tokens. ``max_kl`` takes the earliest exit within the bound; ``layers``
takes exactly that many layers. The curve covers the exits from ``min_layers`` on (by default from half the
depth: each exit costs a pass of the LM head over the calibration tokens) and goes into the variant's facts, so
its manifest says why.

The final norm: ``hidden_states[i]`` is the raw output of layer ``i`` for ``i < n``, but transformers
returns ``hidden_states[n]`` with the final norm already applied (it is the model's
``last_hidden_state``). :func:`exit_logits` normalises the first and not the second, so the exit at
full depth gives the model's own logits (KL 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipstream.calibration import Calibration
from slipstream.config import TechniqueConfig
from slipstream.errors import InvalidConfig, Unsupported
from slipstream.progress import Progress, or_null
from slipstream.techniques.prune.structured import calibration_batches, drop_layers, parameter_count


@dataclasses.dataclass(frozen=True)
class EarlyExit(TechniqueConfig):
    """Skip the last decoder layers: exit where the KL from the full model is within ``max_kl``, or after
    exactly ``layers`` layers (set one of the two)."""

    technique = "early-exit"
    max_kl: float | None = None  # the earliest exit whose mean KL (nats/token) from the full model is within this
    layers: int | None = None  # or: exit after exactly this many decoder layers
    min_layers: int | None = None  # never exit earlier (the KL curve starts here); None: half the model's depth
    calibration: str = "wikitext2-valid"
    samples: int = 8
    sequence_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.max_kl is None) == (self.layers is None):
            raise InvalidConfig("early-exit: set exactly one of max_kl (the earliest exit whose KL from the full "
                                "model is within it) or layers (exit after exactly that many layers)"
                                + ("; both are set" if self.layers is not None else "; neither is set"))
        if self.max_kl is not None and not self.max_kl > 0:
            raise InvalidConfig(f"early-exit: max_kl must be above 0, got {self.max_kl}")
        if self.min_layers is not None and self.min_layers < 1:
            raise InvalidConfig(f"early-exit: min_layers must be at least 1, got {self.min_layers}")
        if self.layers is not None and self.min_layers is not None and self.layers < self.min_layers:
            raise InvalidConfig(f"early-exit: layers={self.layers} is below min_layers={self.min_layers}")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        rule = f"kl{self.max_kl:g}".replace("+", "") if self.max_kl is not None else f"l{self.layers}"
        return f"exit-{rule}" + (f"-min{self.min_layers}" if self.min_layers is not None else "")


# --- measurement ------------------------------------------------------------------------------------

def check_model(model: Any, config: EarlyExit) -> int:
    """The model's decoder depth, after checking it has the parts an exit needs and that the config
    leaves at least one layer out."""
    inner = getattr(model, "model", None)
    if not all(hasattr(x, a) for x, a in ((inner, "layers"), (inner, "norm"), (model, "lm_head"))):
        raise Unsupported(f"early-exit: {type(model).__name__} has no model.layers, model.norm and lm_head "
                          "(a decoder-only causal LM)")
    n = len(inner.layers)
    if config.min_layers is not None and config.min_layers >= n:
        raise InvalidConfig(f"early-exit: min_layers={config.min_layers} leaves nothing to skip in {n} layers")
    if config.layers is not None and config.layers >= n:
        raise InvalidConfig(f"early-exit: layers={config.layers} skips nothing; the model has {n} layers "
                            f"(exit after 1 to {n - 1})")
    return n


def first_exit(config: EarlyExit, n_layers: int) -> int:
    """The earliest exit the curve measures: ``min_layers``, by default half the depth (each exit costs a pass
    of the LM head over the calibration tokens), or earlier where ``layers`` asks for an earlier exit."""
    first = config.min_layers if config.min_layers is not None else max(1, n_layers // 2)
    return min(first, config.layers) if config.layers is not None else first


def exit_logits(model: Any, hidden_states: tuple[Any, ...], layers: int) -> Any:
    """Logits of the exit after ``layers`` decoder layers, from a forward pass's ``hidden_states`` (n + 1
    of them: the embeddings, then each layer's output, the last one already through the final norm), as
    the model truncated to ``layers`` layers computes them."""
    import torch

    n = len(hidden_states) - 1
    h = hidden_states[layers]
    if layers < n:
        h = model.model.norm(h)
    logits = model.lm_head(h)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def kl_curve(model: Any, batches: list[Any], first: int = 1, on_batch: Callable[[], None] = lambda: None
             ) -> dict[int, float]:
    """Exit ``L`` -> mean ``KL(full || exit at L)`` in nats per token, for ``L`` from ``first`` to the
    model's depth (whose value is 0 by construction: the check that the final norm is handled right)."""
    import torch

    n = len(model.model.layers)
    sums = {layers: 0.0 for layers in range(first, n + 1)}
    tokens = 0
    with torch.no_grad():
        for ids in batches:
            out = model(input_ids=ids, use_cache=False, output_hidden_states=True)
            hidden = out.hidden_states
            if len(hidden) != n + 1:
                raise Unsupported(f"early-exit: {type(model).__name__} returned {len(hidden)} hidden states "
                                  f"for {n} layers (expected {n + 1})")
            reference = torch.log_softmax(out.logits.float(), dim=-1)
            p = reference.exp()
            for layers in sums:
                q = torch.log_softmax(exit_logits(model, hidden, layers).float(), dim=-1)
                sums[layers] += (p * (reference - q)).sum(-1).clamp_min(0).sum().item()
            tokens += reference.shape[0] * reference.shape[1]
            on_batch()
    return {layers: s / max(tokens, 1) for layers, s in sums.items()}


def choose_exit(curve: dict[int, float], config: EarlyExit, n_layers: int) -> int:
    """The exit ``config`` asks for: ``layers``, or the earliest exit before full depth within ``max_kl``."""
    if config.layers is not None:
        return config.layers
    within = [layers for layers, kl in sorted(curve.items()) if layers < n_layers and kl <= config.max_kl]
    if not within:
        last = n_layers - 1
        raise InvalidConfig(f"early-exit: no exit before layer {n_layers} is within max_kl={config.max_kl:g}; "
                            f"the closest, after {last} layers, has KL {curve[last]:.4g} "
                            f"(raise max_kl or set layers)")
    return within[0]


# --- the technique ----------------------------------------------------------------------------------

def exit_model(model: Any, config: EarlyExit, batches: list[Any], progress: Progress | None = None) -> dict:
    """Measure the KL curve, choose the exit and cut ``model`` there, in place; returns the facts."""
    progress = or_null(progress)
    n = check_model(model, config)
    before = parameter_count(model)
    first = first_exit(config, n)
    with progress.task(f"measuring the KL of exits {first}..{n} against the full model", total=len(batches)) as task:
        curve = kl_curve(model, batches, first=first, on_batch=task.advance)
    keep = choose_exit(curve, config, n)
    drop_layers(model, list(range(keep, n)))
    after = parameter_count(model)
    rule = f"max_kl={config.max_kl:g}" if config.max_kl is not None else f"layers={config.layers}"
    return {"layers": {"before": n, "after": keep, "dropped": list(range(keep, n))},
            "exit": {"layers": keep, "kl": round(curve[keep], 6), "rule": rule},
            "kl_by_exit": {str(layers): round(kl, 6) for layers, kl in curve.items()},
            "parameters_before": before, "parameters": after, "parameter_ratio": round(after / before, 4)}


def apply(src: Path, out: Path, config: EarlyExit, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.techniques.hf_io import load_model, save_model

    progress = or_null(progress)
    model = load_model(src, device=device)
    check_model(model, config)
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    with progress.task(f"reading calibration text ({calibration.source})"):
        batches = [b.to(device) for b in calibration_batches(src, calibration)]
    facts = exit_model(model, config, batches, progress)
    with progress.task(f"saving the model cut after layer {facts['exit']['layers']}"):
        save_model(model, src, out)
    facts["calibration"] = {"source": calibration.source, "samples": calibration.samples,
                            "sequence_length": calibration.sequence_length}
    facts["engines"] = "a smaller dense model: every engine (transformers, CTranslate2, ...) runs it as is"
    return facts
