"""Pruning and distillation through ``slipstream optimize``: options as key=value, one-line errors."""

from __future__ import annotations

import json

from tests.cli.test_cli import slipstream


def test_optimize_prunes_and_distills_through_the_cli(tiny_llama_dir, tmp_path):
    slipstream("models", "import", str(tiny_llama_dir), "--name", "tiny", home=tmp_path, check=True)
    pruned = json.loads(slipstream("optimize", "tiny", "-t", "prune-structured", "-o", "layers=0.5", "-o", "mlp=0.25",
                                   "-o", "samples=2", "-o", "sequence_length=32", "--json",
                                   home=tmp_path, check=True).stdout)
    assert pruned["parameters"] < json.loads(slipstream("models", "show", "tiny", "--json", home=tmp_path,
                                                        check=True).stdout)["parameters"]
    distilled = slipstream("optimize", pruned["name"], "-t", "distill", "-o", "steps=2", "-o", "batch_size=1",
                           "-o", "sequence_length=16", "--name", "student", home=tmp_path, check=True)
    assert "made student" in distilled.stdout
    sparse = json.loads(slipstream("optimize", "tiny", "-t", "prune-unstructured", "-o", "method=magnitude",
                                   "-o", "sparsity=0.5", "--json", home=tmp_path, check=True).stdout)
    assert sparse["name"] == "tiny-prune-magnitude-50"


def test_bad_pruning_options_fail_in_one_line(tiny_llama_dir, tmp_path):
    slipstream("models", "import", str(tiny_llama_dir), "--name", "tiny", home=tmp_path, check=True)
    for args, message in [
        (["-t", "prune-unstructured", "-o", "sparsity=1.2"], "sparsity must be in (0, 1), got 1.2"),
        (["-t", "prune-structured", "-o", "layers=0", "-o", "heads=0.9"], "does not fit the attention layout"),
        (["-t", "distill"], "has no parent to learn from"),
    ]:
        proc = slipstream("optimize", "tiny", *args, home=tmp_path)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
