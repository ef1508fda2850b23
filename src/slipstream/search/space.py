"""The candidate space: every recipe the installed extras and the device can run.

A candidate is a recipe (one or more technique steps) with a prior (:mod:`slipstream.search.recipes`):
the speed-up and size ratio we expect from it and how likely it is to pass an accuracy gate. Priors only
order the search (cheap, likely-good first); every decision after that rests on measurements.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slipstream.config import TechniqueConfig
from slipstream.errors import SlipstreamError
from slipstream.search.recipes import Prior, Recipe, builtin_recipes, read_recipe_file
from slipstream.search.record import LeftOut
from slipstream.techniques.registry import TechniqueSpec, get, make_config

__all__ = ["Candidate", "Prior", "build_space", "candidates_from", "gather_recipes", "on_this_machine",
           "read_recipe_file", "runnable"]


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
                "prior": self.prior.to_dict()}

    def stand_in(self) -> "Candidate | None":
        """Its cheap twin for the speed probe: every step's stand-in (weight-only training and calibrated
        rounding left out or rounded to nearest), the same format and shapes, so the same speed and size; None
        when it has no cheaper twin. Its prior is the candidate's, expected to take at most
        :data:`STAND_IN_MINUTES`."""
        steps = tuple(t for s in self.steps if (t := s.stand_in()) is not None)
        if not steps or steps == self.steps:
            return None
        return Candidate(steps, replace(self.prior, minutes=min(self.prior.minutes, STAND_IN_MINUTES)))


# What a stand-in is expected to take to build and probe (its steps are the cheap ones).
STAND_IN_MINUTES = 2.0


def on_this_machine(recipe: Recipe, device: str) -> Recipe:
    """A built-in recipe with its prior as it holds on this machine. W8A8's speed-up needs the int8 products
    of :mod:`slipstream.engines.torch.kernels.int8_gemm` (VNNI or AMX); without them it runs the float path,
    slower than the original (docs/engines.md#w8a8-in-int8). The CTranslate2 int8 priors hold on a CPU with
    VNNI; on an x86 CPU without it CTranslate2's int8 (oneDNN) saturates, slower and far less accurate
    (BENCHMARKS.md#cpus-without-vnni), so such candidates are expected to pass a tight gate rarely."""
    steps, prior = recipe.steps, recipe.prior
    if device == "cpu" and steps[-1][0] == "w8a8":
        from slipstream.engines.torch.kernels.int8_gemm import available

        return recipe if available() is None else replace(recipe, prior=replace(prior, speedup=min(prior.speedup, 0.6)))
    ct2 = [o.get("quantization", "int8") for t, o in steps if t == "ctranslate2"]
    if device != "cpu" or not ct2 or not ct2[-1].startswith("int8"):
        return recipe
    from slipstream.engines.ctranslate2 import saturating_int8

    if not saturating_int8(ct2[-1]):
        return recipe
    return replace(recipe, prior=replace(prior, speedup=min(prior.speedup, 2.2),
                                         pass_probability=min(prior.pass_probability, 0.1)))


def runnable(spec: TechniqueSpec, config: TechniqueConfig, device: str, speed: bool = False) -> str | None:
    """Why ``config`` cannot run here (missing extra, device), or None if it can. With ``speed`` (a latency,
    throughput or cost objective), also why it is not worth running: a module's ``check_device`` that answers
    False says this device only emulates the arithmetic (half precision on a CPU without native half
    arithmetic), slower than what it replaces."""
    if not spec.extra_installed():
        return f"needs the '{spec.extra}' extra"
    check = getattr(spec.load_module(), "check_device", None)
    if check:
        # Modules check what they need: the whole config, the device alone, or a field and the device.
        params = list(inspect.signature(check).parameters)
        args = [device if p == "device" else config if p == "config" else getattr(config, p) for p in params]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the reason is reported below, once
                native = check(*args)
        except SlipstreamError as exc:
            return str(exc)
        if speed and native is False:
            return (f"{config.slug()}: this {device.upper()} only emulates that arithmetic, slower than float32; "
                    "left out of a speed search (the size objective keeps it)")
    return None


def gather_recipes(device: str, recipe_file: Path | None = None, replace_defaults: bool = False) -> list[Recipe]:
    """The built-in recipes (priors as they hold on this machine) and a recipe file's, checked as they load."""
    recipes = [] if replace_defaults else [on_this_machine(r, device) for r in builtin_recipes()]
    if recipe_file:
        extra, replace_all = read_recipe_file(recipe_file)
        recipes = extra if replace_all else recipes + extra
    return recipes


def candidates_from(recipes: list[Recipe], device: str, include: list[str] | None = None,
                    exclude: list[str] | None = None, task: str = "causal-lm",
                    objective: str = "size") -> tuple[list[Candidate], list[LeftOut]]:
    """Candidates that can run here on a model of ``task``, and the recipes left out with the reason (recipes
    for other tasks are not part of the space at all; for a speed ``objective``, nor are the ones this device
    would only emulate)."""
    candidates: list[Candidate] = []
    skipped: list[LeftOut] = []
    seen: set[str] = set()
    for recipe in recipes:
        if task not in recipe.tasks:
            continue
        try:
            configs = tuple(make_config(t, o) for t, o in recipe.steps)
        except SlipstreamError as exc:
            skipped.append(LeftOut(list(recipe.steps), str(exc)))
            continue
        names = {c.technique for c in configs}
        if include and not names & set(include) or exclude and names & set(exclude):
            continue
        candidate = Candidate(configs, recipe.prior)
        if candidate.id in seen:
            continue
        seen.add(candidate.id)
        speed = objective in ("latency", "throughput", "cost")
        reason = next((r for c in configs if (r := runnable(get(c.technique), c, device, speed))), None)
        if reason:
            skipped.append(LeftOut(candidate.label, reason))
        else:
            candidates.append(candidate)
    return candidates, skipped


def build_space(device: str, recipe_file: Path | None = None, include: list[str] | None = None,
                exclude: list[str] | None = None, replace_defaults: bool = False,
                task: str = "causal-lm") -> tuple[list[Candidate], list[LeftOut]]:
    """Candidates that can run here, and the ones left out with the reason."""
    return candidates_from(gather_recipes(device, recipe_file, replace_defaults), device, include, exclude, task)
