"""Every variant directory carries a README: the engine, the command to run it with that engine's own
tool, and the figures slipstream measured for it (written again when a figure is stored)."""

from __future__ import annotations

import pytest

from slipstream.store.manifest import Manifest, list_files


@pytest.fixture(scope="module")
def fresh(session_store):
    """A CTranslate2 int8 variant of the tiny Llama that no other test has measured."""
    from slipstream.pipeline import optimize

    return optimize("tiny", "ctranslate2", {"quantization": "int8"}, name="tiny-ct2-readme", store=session_store)


def test_ctranslate2_readme_names_the_engine_and_its_own_api(fresh):
    readme = (fresh.path / "README.md").read_text()
    assert readme.startswith("# tiny-ct2-readme\n")
    assert "made by slipstream from `tiny` with `ctranslate2` (quantization=int8)" in readme.lower()
    assert "**CTranslate2**" in readme and "ctranslate2.Generator(" in readme
    assert "Nothing measured yet" in readme
    # the README is rendered, not one of the files the manifest's digest covers
    assert "README.md" not in {f.path for f in Manifest.read(fresh.path).files}
    assert "README.md" not in {f.path for f in list_files(fresh.path)}


def test_figures_appear_once_measured(session_store, fresh):
    from slipstream.evaluation.run import EvalSettings, evaluate

    report = evaluate(fresh.name, reference="parent", store=session_store,
                      settings=EvalSettings(window=64, stride=64, max_tokens=512, threads=1))
    readme = (fresh.path / "README.md").read_text()
    assert "## Measured by slipstream" in readme and "Nothing measured yet" not in readme
    assert f"perplexity {report.metrics['perplexity']:.3f}" in readme
    assert "against `tiny`" in readme


@pytest.mark.parametrize("technique,options,expected", [
    ("gguf", {"quantization": "F32"}, ["**llama.cpp**", "llama-server -m model.gguf", "create_chat_completion"]),
    ("cast", {"dtype": "bfloat16"}, ["**transformers**", "AutoModelForCausalLM.from_pretrained(\".\")"]),
])
def test_each_format_says_how_to_run_it(session_store, technique, options, expected):
    from slipstream.pipeline import optimize

    variant = optimize("tiny", technique, options, store=session_store)
    readme = (variant.path / "README.md").read_text()
    for text in expected:
        assert text in readme
