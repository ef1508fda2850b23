"""The candidate space: every recipe the installed extras and the device can run.

A candidate is a recipe (one or more technique steps) with a prior: the speed-up and size ratio we
expect from it and how likely it is to pass an accuracy gate. Priors only order the search (cheap,
likely-good first); every decision after that rests on measurements.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig, SlipstreamError
from slipstream.config import TechniqueConfig
from slipstream.techniques.registry import TechniqueSpec, get, make_config


@dataclass(frozen=True)
class Prior:
    speedup: float  # expected batch-1 decode speed-up over the original
    size_ratio: float  # expected size relative to the original
    pass_probability: float  # how likely a 1% perplexity gate holds
    minutes: float  # expected time to build, evaluate and benchmark on a small model, 2 CPU cores


@dataclass(frozen=True)
class Candidate:
    steps: tuple[TechniqueConfig, ...]
    prior: Prior = field(compare=False)

    @property
    def id(self) -> str:
        text = json.dumps([s.to_dict() for s in self.steps], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return " + ".join(s.slug() for s in self.steps)

    def variant_name(self, model: str) -> str:
        return "-".join([model, *(s.slug() for s in self.steps)])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "steps": [s.to_dict() for s in self.steps],
                "prior": self.prior.__dict__}


# (steps as (technique, options)), prior. Extended as techniques land; a recipe file adds more.
DEFAULT_RECIPES: list[tuple[list[tuple[str, dict]], Prior]] = [
    ([("smoothquant", {"alpha": 0.7}), ("ctranslate2", {"quantization": "int8"})], Prior(4.0, 0.26, 0.7, 3.0)),
    ([("ctranslate2", {"quantization": "int8"})], Prior(4.0, 0.26, 0.4, 2.0)),
    # alpha chosen per layer, the head smoothed too (untied from the embedding: larger on disk), then the
    # weights rounded by GPTQ onto CTranslate2's own int8 grid: the lowest KL of these (Gemma-3-270m 0.018
    # against 0.028 at 0.7, SmolLM2 0.008 against 0.016) and the one CTranslate2 int8 recipe within 1% on
    # Gemma (+0.54% on 32,768 tokens; the same smoothing without GPTQ +1.67%; SmolLM2 +1.05%, 0.7 +0.93%:
    # BENCHMARKS.md, "GPTQ onto CTranslate2's int8 grid"). It replaces alpha 0.5, which no model preferred.
    ([("smoothquant", {"alpha": "auto", "lm_head": True}), ("int8-rows", {}),
      ("ctranslate2", {"quantization": "int8"})], Prior(4.0, 0.35, 0.6, 14.0)),
    ([("ctranslate2", {"quantization": "int8_float16"})], Prior(4.0, 0.26, 0.4, 2.0)),
    ([("ctranslate2", {"quantization": "int8_bfloat16"})], Prior(4.0, 0.26, 0.4, 2.0)),
    ([("ctranslate2", {"quantization": "float16"})], Prior(2.0, 0.5, 0.99, 2.0)),
    ([("ctranslate2", {"quantization": "bfloat16"})], Prior(2.0, 0.5, 0.95, 2.0)),
    ([("ctranslate2", {"quantization": "int16"})], Prior(2.3, 0.5, 0.3, 2.0)),
    ([("ctranslate2", {"quantization": "float32"})], Prior(1.2, 1.0, 0.999, 2.0)),
    # llm-compressor checkpoints (compressed-tensors; transformers, or vLLM where its kernels run):
    # small on disk, rarely faster on a CPU through transformers.
    ([("rtn", {"bits": 8, "group_size": None})], Prior(0.9, 0.3, 0.95, 3.0)),
    ([("gptq", {"bits": 4, "group_size": 128, "samples": 64})], Prior(0.8, 0.18, 0.3, 8.0)),
    ([("awq", {"bits": 4, "group_size": 128, "samples": 64})], Prior(0.8, 0.18, 0.3, 8.0)),
    ([("rtn", {"bits": 4, "group_size": 128})], Prior(0.8, 0.18, 0.15, 3.0)),
    # W8A8: int8 products in the transformers engine on a CPU with VNNI; without VNNI, compressed-tensors'
    # float path (0.57x). keep_float="auto" (the default) leaves in float the module kinds whose int8 inputs
    # cost the most, chosen per model on calibration text: the down projections on SmolLM2 (+0.47%; 1.16x at
    # batch 1, 1.79x at batch 8, Zen 4), the down projections and q/k/v on Gemma-3-270m (+0.16%, where every
    # linear in int8 is +2.69%: BENCHMARKS.md, "W8A8 keeps the costly module kinds in float")
    ([("w8a8", {"samples": 64})], Prior(1.15, 0.5, 0.85, 16.0)),
    # ... and every linear in int8 (SmolLM2 +0.82%, 1.22x / 1.91x): the fastest where it passes
    ([("w8a8", {"samples": 64, "keep_float": []})], Prior(1.2, 0.41, 0.5, 15.0)),
    # llama.cpp (GGUF) and ONNX Runtime exports.
    ([("gguf", {"quantization": "Q8_0"})], Prior(3.5, 0.27, 0.8, 3.0)),
    ([("gguf", {"quantization": "Q5_K_M"})], Prior(4.0, 0.2, 0.3, 3.0)),
    ([("gguf", {"quantization": "Q4_K_M"})], Prior(4.5, 0.17, 0.2, 3.0)),
    ([("onnx", {"quantization": "int8_blockwise"})], Prior(2.8, 0.3, 0.7, 4.0)),
    # per-token int8 with 16 outlier channels per input in float32 (the default): +0.57% on SmolLM2,
    # +0.53% on Gemma-3-270m at 2.1x the original; with none: +3.4% at 2.7x (BENCHMARKS.md, "ONNX
    # Runtime int8 with outlier channels in float"; it replaces SmoothQuant then down projections and
    # head in float, which was less accurate on Gemma and no faster)
    ([("onnx", {"quantization": "int8_dynamic"})], Prior(2.1, 0.49, 0.8, 5.0)),
    ([("onnx", {"quantization": "int8_dynamic", "outlier_channels": 0})], Prior(2.7, 0.47, 0.2, 4.0)),
    ([("onnx", {"quantization": "float32"})], Prior(1.5, 1.0, 0.99, 4.0)),
    # PyTorch casts and bitsandbytes (transformers engine).
    ([("cast", {"dtype": "float16"})], Prior(1.0, 0.5, 0.95, 2.0)),
    ([("bitsandbytes", {"quant_type": "nf4"})], Prior(1.0, 0.2, 0.1, 2.0)),
    # int8 at slipstream's outlier threshold 2: within 1% on SmolLM2 and Gemma-3-270m, 0.52-0.58x
    ([("bitsandbytes", {"quant_type": "int8"})], Prior(0.55, 0.41, 0.8, 2.0)),
]


def default_recipes() -> list[tuple[list[tuple[str, dict]], Prior]]:
    """The built-in space: quantization and export recipes, then prune-then-distill recipes (long to
    build, unlikely to pass a tight gate: last in expected value, first to fall to the budget)."""
    from slipstream.techniques.prune.recipes import PRUNING_RECIPES

    pruning = [([tuple(step) for step in steps], Prior(speedup, size, p, minutes))
               for steps, speedup, size, p, minutes in PRUNING_RECIPES]
    return list(DEFAULT_RECIPES) + pruning  # type: ignore[arg-type]


def on_this_machine(steps: list[tuple[str, dict]], prior: Prior, device: str) -> Prior:
    """A built-in prior as it holds on this machine. W8A8's speed-up needs the int8 products of
    :mod:`slipstream.engines.torch.kernels.int8_gemm` (VNNI or AMX). The CTranslate2 int8 priors were measured on a CPU
    with VNNI; on an x86 CPU without it, CTranslate2's int8 (oneDNN) saturates: measured on SmolLM2,
    +15.8% perplexity and 2.2x the original's decode speed, against +3.7% and 4.3x (BENCHMARKS.md,
    "CPUs without VNNI"), so such candidates are expected to be slower and to pass a tight gate rarely."""
    if device == "cpu" and steps[-1][0] == "w8a8":
        from slipstream.engines.torch.kernels.int8_gemm import available

        return prior if available() is None else Prior(min(prior.speedup, 0.6), prior.size_ratio,
                                                       prior.pass_probability, prior.minutes)
    ct2 = [o.get("quantization", "int8") for t, o in steps if t == "ctranslate2"]
    if device != "cpu" or not ct2 or not ct2[-1].startswith("int8"):
        return prior
    from slipstream.engines.ctranslate2 import saturating_int8

    if not saturating_int8(ct2[-1]):
        return prior
    return Prior(min(prior.speedup, 2.2), prior.size_ratio, min(prior.pass_probability, 0.1), prior.minutes)


def runnable(spec: TechniqueSpec, config: TechniqueConfig, device: str) -> str | None:
    """Why ``config`` cannot run here (missing extra, device), or None if it can."""
    if not spec.extra_installed():
        return f"needs the '{spec.extra}' extra"
    check = getattr(spec.load_module(), "check_device", None)
    if check:
        # Modules check what they need: the whole config, the device alone, or a field and the device.
        params = list(inspect.signature(check).parameters)
        args = [device if p == "device" else config if p == "config" else getattr(config, p) for p in params]
        try:
            check(*args)
        except SlipstreamError as exc:
            return str(exc)
    return None


def build_space(device: str, recipe_file: Path | None = None, include: list[str] | None = None,
                exclude: list[str] | None = None, replace_defaults: bool = False) -> tuple[list[Candidate], list[dict]]:
    """Candidates that can run here, and the ones left out with the reason."""
    recipes = [] if replace_defaults else [(steps, on_this_machine(steps, prior, device))
                                           for steps, prior in default_recipes()]
    if recipe_file:
        extra, replace = read_recipe_file(recipe_file)
        recipes = extra if replace else recipes + extra
    candidates, skipped, seen = [], [], set()
    for steps, prior in recipes:
        try:
            configs = tuple(make_config(t, o) for t, o in steps)
        except SlipstreamError as exc:
            skipped.append({"recipe": steps, "reason": str(exc)})
            continue
        names = {c.technique for c in configs}
        if include and not names & set(include) or exclude and names & set(exclude):
            continue
        candidate = Candidate(configs, prior)
        if candidate.id in seen:
            continue
        seen.add(candidate.id)
        reason = next((r for c in configs if (r := runnable(get(c.technique), c, device))), None)
        if reason:
            skipped.append({"recipe": candidate.label, "reason": reason})
        else:
            candidates.append(candidate)
    return candidates, skipped


def read_recipe_file(path: Path) -> tuple[list[tuple[list[tuple[str, dict]], Prior]], bool]:
    """A YAML or JSON file: ``{"replace": false, "candidates": [{"steps": [{"technique": ..., ...}],
    "prior": {"speedup": 3, "size_ratio": 0.3, "pass_probability": 0.5, "minutes": 3}}]}``."""
    if not path.exists():
        raise InvalidConfig(f"{path}: no such recipe file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise InvalidConfig(f"{path}: not valid {path.suffix.lstrip('.').upper()} ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
        raise InvalidConfig(f"{path}: expected a mapping with a 'candidates' list")
    out = []
    for i, c in enumerate(data["candidates"]):
        steps = c.get("steps") if isinstance(c, dict) else None
        if not steps or not all(isinstance(s, dict) and "technique" in s for s in steps):
            raise InvalidConfig(f"{path}: candidate {i + 1} needs 'steps', each with a 'technique'")
        prior = Prior(**({"speedup": 1.0, "size_ratio": 1.0, "pass_probability": 0.5, "minutes": 3.0}
                         | c.get("prior", {})))
        out.append(([(s["technique"], {k: v for k, v in s.items() if k != "technique"}) for s in steps], prior))
    return out, bool(data.get("replace", False))
