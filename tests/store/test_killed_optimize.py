"""``slipstream optimize`` SIGKILLed at each step of writing its variant: no half variant, no staging left,
and the same command then succeeds (or, killed after the rename, finds the complete variant in place)."""

from __future__ import annotations

import json

import pytest

from slipstream.store import Store
from tests.killing import kill_at, slipstream

COMMAND = ["optimize", "tiny", "-t", "cast", "-q", "bfloat16", "--json"]


@pytest.fixture
def home(tmp_path, tiny_llama_dir):
    from slipstream.models.intake import import_model

    store = Store(tmp_path / "home")
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store.home


@pytest.mark.parametrize("hook,after", [
    ("slipstream.techniques.hf_io:save_model", True),  # the technique has written its files into staging
    ("slipstream.store.manifest:Manifest.write", True),  # the manifest too: only the rename is left
])
def test_killed_before_the_rename_leaves_nothing_and_the_command_then_succeeds(home, hook, after):
    kill_at(home, hook, COMMAND, after=after)
    staging = sorted(p.name for p in (home / "staging").iterdir())
    assert len(staging) == 2 and staging[1].endswith(".lock")  # what the killed process left
    store = Store(home)  # the next open removes it
    assert list(store.staging_dir.iterdir()) == []
    assert [v.name for v in store.list()] == ["tiny"]
    assert sorted(p.name for p in store.variants_dir.iterdir()) == ["tiny"]

    again = slipstream(home, *COMMAND)
    assert again.returncode == 0, again.stderr
    made = json.loads(again.stdout)
    assert made["name"] == "tiny-bf16" and made["parent"] == "tiny"
    store.verify("tiny-bf16")  # complete: every file as its manifest says
    assert list(store.staging_dir.iterdir()) == []


def test_killed_between_the_rename_and_the_registry_leaves_the_complete_variant(home):
    kill_at(home, "slipstream.store.registry:Registry.add_variant", COMMAND, after=False,
            when="args[1].name == 'tiny-bf16'")
    store = Store(home)  # the manifest in variants/ rebuilds the missing row
    assert [v.name for v in store.list()] == ["tiny", "tiny-bf16"]
    store.verify("tiny-bf16")
    assert list(store.staging_dir.iterdir()) == []
    again = slipstream(home, *COMMAND)  # the variant is there: the command says so instead of writing it twice
    assert again.returncode == 1 and "'tiny-bf16' already exists" in again.stderr, again.stderr
