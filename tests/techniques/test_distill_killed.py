"""``slipstream optimize -t distill`` SIGKILLed from outside right after a checkpoint: the same command
resumes from that checkpoint (no finished step lost or redone) and writes the weights an uninterrupted run
writes."""

from __future__ import annotations

import json

import pytest

from slipstream.store import Store
from tests.killing import kill_at, slipstream

OPTIONS = {"steps": 8, "checkpoint_every": 2, "batch_size": 2, "accumulation": 1, "sequence_length": 32,
           "learning_rate": 0.002, "warmup": 2, "temperature": 1.0}


def command(name: str) -> list[str]:
    options = [arg for key, value in OPTIONS.items() for arg in ("-o", f"{key}={value}")]
    return ["optimize", "student", "-t", "distill", *options, "--name", name, "--json"]


@pytest.fixture
def home(tmp_path, tiny_llama_dir):
    """The tiny Llama and a structured-pruned student of it (the teacher is its root: the tiny Llama)."""
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize

    store = Store(tmp_path / "home")
    import_model(str(tiny_llama_dir), "tiny", store=store)
    optimize("tiny", "prune-structured", {"layers": 0.5, "mlp": 0.25, "samples": 2, "sequence_length": 32},
             name="student", store=store)
    return store.home


def test_a_killed_distillation_resumes_from_its_last_checkpoint(home):
    import torch
    from safetensors.torch import load_file

    kill_at(home, "slipstream.techniques.distill.kd:save_checkpoint", command("resumed"),
            when="args[1]['step'] == 4")
    [checkpoints] = (home / "checkpoints").iterdir()
    assert torch.load(checkpoints / "checkpoint.pt", weights_only=False)["step"] == 4  # kept, finished work

    again = slipstream(home, *command("resumed"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["name"] == "resumed"
    store = Store(home)
    facts = store.manifest("resumed").extra["facts"]
    assert facts["resumed_from_step"] == 4 and facts["steps"] == 8  # steps 1-4 not run again
    assert not checkpoints.exists() and list(store.staging_dir.iterdir()) == []

    straight = slipstream(home, *command("straight"))  # the same run, never interrupted
    assert straight.returncode == 0, straight.stderr
    assert store.manifest("straight").extra["facts"]["resumed_from_step"] is None
    resumed_w = load_file(store.get("resumed").path / "model.safetensors")
    straight_w = load_file(store.get("straight").path / "model.safetensors")
    assert resumed_w.keys() == straight_w.keys()
    for key, value in straight_w.items():
        assert torch.allclose(resumed_w[key], value, atol=1e-6), key
    assert any(not torch.equal(resumed_w[k], load_file(store.get("student").path / "model.safetensors")[k])
               for k in resumed_w)  # it did train
