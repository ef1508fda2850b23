"""Recipes as data: the built-in ones (``recipes.json`` beside this module) and a user's recipe file.

A recipe is one or more technique steps applied in order, with a prior: the speed-up and size we expect
from it, how likely it is to pass an accuracy gate, and how long it takes. Priors only order the search;
every decision after that rests on measurements. Each built-in prior names its ``evidence``, a section of
the docs or BENCHMARKS.md (a test checks that every one resolves).

Both files have one shape (so an entry can be copied from one to the other)::

    {"replace": false,                       # a user's file only: its candidates replace the built-in ones
     "candidates": [{"steps": [{"technique": "smoothquant", "alpha": 0.7},
                               {"technique": "ctranslate2", "quantization": "int8"}],
                     "prior": {"speedup": 4, "size_ratio": 0.26, "pass_probability": 0.7, "minutes": 3},
                     "evidence": "BENCHMARKS.md#ctranslate2-variants",
                     "note": "why this prior",
                     "tasks": ["causal-lm"]}]}              # optional: the model tasks it is for

Unknown keys are refused, naming the key. The built-in file is checked strictly when first loaded: every
prior complete, every evidence pointer given, every step a valid config of a registered technique. In a
user's file a prior may be partial (defaults fill it) and a step that is not a valid config leaves its
recipe out of the space with the reason, as one that needs a missing extra does.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig, SlipstreamError

BUILTIN = "recipes.json"
_TOP_KEYS = ("replace", "candidates")
_CANDIDATE_KEYS = ("steps", "prior", "evidence", "note", "tasks")
_EVIDENCE = re.compile(r"^[\w./-]+\.md#[\w-]+$")  # a markdown file relative to the repository root, a heading


@dataclass(frozen=True)
class Prior:
    speedup: float  # expected batch-1 decode speed-up over the original
    size_ratio: float  # expected size relative to the original
    pass_probability: float  # how likely a 1% perplexity gate holds
    minutes: float  # expected time to build, evaluate and benchmark on a small model, 2 CPU cores

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# What a user's file leaves out of a prior.
DEFAULT_PRIOR = Prior(speedup=1.0, size_ratio=1.0, pass_probability=0.5, minutes=3.0)

Step = tuple[str, dict[str, Any]]  # (technique, options)


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    prior: Prior
    evidence: str | None = None  # "BENCHMARKS.md#heading": where the prior comes from
    note: str | None = None  # why this recipe and this prior
    tasks: tuple[str, ...] = ("causal-lm",)  # the model tasks it is for (slipstream.models.tasks)


def builtin_recipes() -> tuple[Recipe, ...]:
    """The built-in recipes, loaded and checked once (an error here is a bug in ``recipes.json``)."""
    return _load_builtin()


@functools.cache
def _load_builtin() -> tuple[Recipe, ...]:
    source = resources.files("slipstream.search").joinpath(BUILTIN)
    recipes, _ = parse_recipes(json.loads(source.read_text()), f"slipstream/search/{BUILTIN}", strict=True)
    return tuple(recipes)


def read_recipe_file(path: Path) -> tuple[list[Recipe], bool]:
    """A user's YAML or JSON recipe file: its recipes, and whether they replace the built-in ones."""
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
    return parse_recipes(data, str(path), strict=False)


def parse_recipes(data: Any, source: str, strict: bool) -> tuple[list[Recipe], bool]:
    """Check a recipe file's contents (see the module's docstring); ``strict`` for the built-in file."""
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
        raise InvalidConfig(f"{source}: expected a mapping with a 'candidates' list")
    _refuse_unknown(data, _TOP_KEYS, source)
    if strict and "replace" in data:
        raise InvalidConfig(f"{source}: 'replace' belongs in a user's recipe file")
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise InvalidConfig(f"{source}: 'replace' must be true or false, got {replace!r}")
    return [_recipe(c, f"{source}: candidate {i + 1}", strict) for i, c in enumerate(data["candidates"])], replace


def _recipe(data: Any, where: str, strict: bool) -> Recipe:
    steps = data.get("steps") if isinstance(data, dict) else None
    if not steps or not isinstance(steps, list) or not all(isinstance(s, dict) and "technique" in s for s in steps):
        raise InvalidConfig(f"{where} needs 'steps', each with a 'technique'")
    _refuse_unknown(data, _CANDIDATE_KEYS, where)
    recipe = Recipe(steps=tuple((s["technique"], {k: v for k, v in s.items() if k != "technique"}) for s in steps),
                    prior=_prior(data.get("prior"), where, strict), evidence=data.get("evidence"),
                    note=data.get("note"), tasks=_tasks(data.get("tasks", ["causal-lm"]), where))
    for key in ("evidence", "note"):
        if getattr(recipe, key) is not None and not isinstance(getattr(recipe, key), str):
            raise InvalidConfig(f"{where}: '{key}' must be text")
    if recipe.evidence is not None and not _EVIDENCE.match(recipe.evidence):
        raise InvalidConfig(f"{where}: evidence {recipe.evidence!r} is not FILE.md#heading")
    if strict:
        if recipe.evidence is None:
            raise InvalidConfig(f"{where} needs 'evidence': the docs section its prior comes from")
        _check_steps(recipe.steps, where)
    return recipe


def _tasks(data: Any, where: str) -> tuple[str, ...]:
    from slipstream.models.tasks import TASKS

    if not isinstance(data, list) or not data or any(t not in TASKS for t in data):
        raise InvalidConfig(f"{where}: 'tasks' must be a list of {', '.join(TASKS)}, got {data!r}")
    return tuple(data)


def _prior(data: Any, where: str, strict: bool) -> Prior:
    if data is None and not strict:
        return DEFAULT_PRIOR
    if not isinstance(data, dict):
        raise InvalidConfig(f"{where}: 'prior' must be a mapping of {', '.join(DEFAULT_PRIOR.to_dict())}")
    _refuse_unknown(data, tuple(DEFAULT_PRIOR.to_dict()), f"{where}: prior")
    missing = [k for k in DEFAULT_PRIOR.to_dict() if k not in data]
    if strict and missing:
        raise InvalidConfig(f"{where}: prior needs {', '.join(missing)}")
    values = DEFAULT_PRIOR.to_dict() | data
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidConfig(f"{where}: prior {key} must be a number, got {value!r}")
    if values["speedup"] <= 0 or values["size_ratio"] <= 0 or values["minutes"] < 0 \
            or not 0 <= values["pass_probability"] <= 1:
        raise InvalidConfig(f"{where}: prior {values} out of range (speed-up and size ratio above 0, "
                            "pass probability from 0 to 1, minutes from 0)")
    return Prior(**values)


def _check_steps(steps: tuple[Step, ...], where: str) -> None:
    """Each step a valid config of a registered technique (names and options as the registry knows them)."""
    from slipstream.techniques.registry import make_config

    for technique, options in steps:
        try:
            make_config(technique, options)
        except SlipstreamError as exc:
            raise InvalidConfig(f"{where}: {exc}") from None


def _refuse_unknown(data: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in data if k not in known]
    if unknown:
        raise InvalidConfig(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
