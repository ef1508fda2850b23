"""The built-in recipes are data: loaded and checked at start, each prior pointing at its evidence."""

import fnmatch
import json
from pathlib import Path

import pytest

from slipstream.errors import InvalidConfig
from slipstream.search.recipes import BUILTIN, Prior, builtin_recipes, parse_recipes, read_recipe_file
from slipstream.techniques.registry import make_config
from tests.test_docs import ROOT, anchors

GOOD = {"steps": [{"technique": "ctranslate2", "quantization": "int8"}],
        "prior": {"speedup": 4, "size_ratio": 0.26, "pass_probability": 0.4, "minutes": 2},
        "evidence": "BENCHMARKS.md#ctranslate2-variants"}


def test_every_builtin_recipe_is_a_valid_config_with_a_full_prior():
    recipes = builtin_recipes()
    assert len(recipes) >= 20
    for recipe in recipes:
        assert [make_config(t, o).technique for t, o in recipe.steps]
        assert isinstance(recipe.prior, Prior) and 0 <= recipe.prior.pass_probability <= 1
        assert recipe.note, recipe.steps  # why this recipe and this prior


def test_every_evidence_pointer_resolves_to_a_file_and_a_heading():
    broken = []
    for recipe in builtin_recipes():
        path, _, anchor = recipe.evidence.partition("#")
        dest = ROOT / path
        if not dest.exists():
            broken.append(f"{recipe.evidence}: no such file")
        elif anchor not in anchors(dest):
            broken.append(f"{recipe.evidence}: no heading with anchor #{anchor} in {path}")
    assert not broken, "\n".join(broken)


def test_the_recipes_file_ships_in_the_package():
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["slipstream"]
    assert any(fnmatch.fnmatch(f"search/{BUILTIN}", p) for p in patterns), patterns


def test_the_pruning_candidates_use_the_pruning_modules_steps():
    from slipstream.techniques.prune.recipes import DISTILL_30M, MLP_ONLY, STRUCTURED

    pruning = [r.steps for r in builtin_recipes() if r.steps[0][0] == "prune-structured" and "causal-lm" in r.tasks]
    assert [steps[:2] for steps in pruning] == [(STRUCTURED, DISTILL_30M)] * 2 + [(MLP_ONLY, DISTILL_30M)]


@pytest.mark.parametrize("data,message", [
    ({"candidates": [GOOD], "version": 2}, "unknown key 'version'"),
    ({"candidates": [GOOD | {"tasks": ["embeddings"]}]}, "'tasks' must be a list of causal-lm, seq2seq"),
    ({"candidates": [GOOD | {"priors": {}}]}, "candidate 1: unknown key 'priors'"),
    ({"candidates": [GOOD | {"prior": GOOD["prior"] | {"speed": 4}}]}, "candidate 1: prior: unknown key 'speed'"),
    ({"candidates": [GOOD | {"prior": {"speedup": 4}}]}, "prior needs size_ratio, pass_probability, minutes"),
    ({"candidates": [GOOD | {"prior": GOOD["prior"] | {"pass_probability": 1.5}}]}, "out of range"),
    ({"candidates": [GOOD | {"prior": GOOD["prior"] | {"minutes": "2"}}]}, "prior minutes must be a number"),
    ({"candidates": [{k: v for k, v in GOOD.items() if k != "evidence"}]}, "candidate 1 needs 'evidence'"),
    ({"candidates": [GOOD | {"evidence": "BENCHMARKS.md"}]}, "is not FILE.md#heading"),
    ({"candidates": [GOOD | {"steps": [{"technique": "warp-drive"}]}]}, "unknown technique 'warp-drive'"),
    ({"candidates": [GOOD | {"steps": [{"technique": "ctranslate2", "quantisation": "int8"}]}]},
     "technique 'ctranslate2' has no option 'quantisation'"),
    ({"candidates": [GOOD], "replace": True}, "'replace' belongs in a user's recipe file"),
])
def test_the_builtin_file_refuses_mistakes_by_name(data, message):
    with pytest.raises(InvalidConfig, match=message):
        parse_recipes(data, "recipes.json", strict=True)
    assert parse_recipes({"candidates": [GOOD]}, "recipes.json", strict=True)[0][0].prior.speedup == 4


def test_a_users_file_is_lenient_where_it_always_was(tmp_path):
    # a partial prior is filled in, and a step that is no valid config is left for the space to leave out
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"candidates": [{"steps": [{"technique": "warp-drive"}], "prior": {"speedup": 3}}]}))
    (recipe,), replace = read_recipe_file(path)
    assert not replace and recipe.prior == Prior(3, 1.0, 0.5, 3.0) and recipe.evidence is None
    # ... but a misspelt key is refused, naming it
    path.write_text(json.dumps({"candidates": [GOOD], "replace_defaults": True}))
    with pytest.raises(InvalidConfig, match="unknown key 'replace_defaults'"):
        read_recipe_file(path)


def test_an_entry_of_the_builtin_file_works_in_a_users_file(tmp_path):
    entry = json.loads((Path(ROOT) / "src/slipstream/search" / BUILTIN).read_text())["candidates"][0]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"replace": True, "candidates": [entry]}))
    (recipe,), replace = read_recipe_file(path)
    assert replace and recipe == builtin_recipes()[0]
