"""``slipstream auto`` SIGKILLed from outside while its second candidate is being measured in full, after the
first finished: the candidate's worker dies with it (left running, it would go on writing into the store
beside the resumed search), and the same command resumes with the finished candidate read back from the
ledger, not measured again, and a complete result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slipstream.store import Store
from tests.killing import hooked_env, slipstream

pytest.importorskip("ctranslate2")

RECIPES = {"replace": True, "candidates": [
    {"steps": [{"technique": "ctranslate2", "quantization": "float32"}],
     "prior": {"speedup": 1.2, "size_ratio": 1.0, "pass_probability": 0.99, "minutes": 1}},
    {"steps": [{"technique": "ctranslate2", "quantization": "int8"}],
     "prior": {"speedup": 4, "size_ratio": 0.26, "pass_probability": 0.5, "minutes": 1}},
]}


def gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"  # dead, its parent not told yet
    except FileNotFoundError:
        return True


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return value


def ledger_lines(home: Path) -> list[str]:
    return [line for path in (home / "searches").glob("*/ledger.jsonl") for line in path.read_text().splitlines()]


def test_a_killed_search_resumes_without_measuring_finished_candidates_again(tmp_path, tiny_llama_dir):
    import shutil

    from slipstream.models.intake import import_model

    # the CLI evaluates in windows of 1,024 tokens every 512: a context that long (RoPE: same weights)
    model = shutil.copytree(tiny_llama_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 1024}))
    store = Store(tmp_path / "home")
    import_model(str(model), "tiny", store=store)
    recipes = tmp_path / "recipes.json"
    recipes.write_text(json.dumps(RECIPES))
    command = ["auto", "tiny", "--objective", "size", "--max-drop", "50%", "--budget", "none", "--recipes",
               str(recipes), "--only-recipes", "--eval-tokens", "512", "--screen-tokens", "256", "--confirm", "0",
               "--run-all", "--report", "", "--json"]

    # Both are built, screened and probed first; the smaller (int8) is measured in full first; the second
    # candidate's worker stops as its full evaluation starts; then the search is killed.
    env, marker = hooked_env(store.home, "slipstream.evaluation.run:evaluate", after=False,
                             when="args[0] == 'tiny-ct2-float32' and kwargs['settings'].max_tokens == 512")
    with open(tmp_path / "first.stderr", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "slipstream.cli.main", *command], env=env,
                                 stdout=subprocess.DEVNULL, stderr=log)
    try:
        def paused() -> str:
            assert first.poll() is None, (tmp_path / "first.stderr").read_text()[-3000:]
            return marker.exists() and marker.read_text()

        worker = int(wait_until(paused, 180, "the second candidate never reached its full evaluation"))
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    wait_until(lambda: gone(worker), 10, "the candidate's worker outlived its search")
    [finished] = [json.loads(line) for line in ledger_lines(store.home)]
    assert finished["name"] == "tiny-ct2-int8"
    made = store.get(finished["name"])

    again = slipstream(store.home, *command)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["resumed"] == 1
    records = {r["id"]: r for r in result["records"]}
    assert len(records) == 2 and all(r["status"] in ("passed", "failed_gate", "screened_out")
                                     for r in records.values()), records
    assert records[finished["id"]] == finished  # read back from the ledger, not measured again
    [other] = [r for i, r in records.items() if i != finished["id"]]
    assert other["worker"]["pid"] != finished["worker"]["pid"] and other["name"] != finished["name"]
    fresh = Store(store.home)
    assert fresh.get(finished["name"]).created == made.created  # its variant was not rebuilt
    assert list(fresh.staging_dir.iterdir()) == []
    ledger = [json.loads(line) for line in ledger_lines(store.home)]
    assert [r["id"] for r in ledger] == [finished["id"], other["id"]]  # nothing lost, nothing twice
