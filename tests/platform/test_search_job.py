"""A search (``slipstream auto``) as a platform job: its candidates as events, its result with the Pareto
frontier; and a service that dies while it runs (its worker killed with it) is resumed by the next service
from the search's ledger, without measuring the finished candidate again."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.killing import hooked_env
from tests.platform.test_api import Platform, _client, _wait_job
from tests.search.test_auto_killed import RECIPES, gone, wait_until

pytest.importorskip("ctranslate2")

# run_all: both candidates measured in full (the size objective would cut the larger one after its probe)
SPEC = {"objective": "size", "max_drop": "50%", "budget": "none", "recipes": RECIPES, "only_recipes": True,
        "eval_tokens": 512, "screen_tokens": 256, "confirm": 0, "run_all": True}


@pytest.fixture
def search_store(store, tiny_llama_dir, tmp_path):
    import shutil

    from slipstream.models.intake import import_model

    # the search evaluates in windows of 1,024 tokens: a context that long (RoPE: same weights)
    model = shutil.copytree(tiny_llama_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 1024}))
    import_model(str(model), "tiny", store=store)
    return store


def test_search_job_reports_candidates_and_frontier(search_store):
    p = Platform(search_store, api_keys=["k"])
    try:
        with _client(p) as c:
            r = c.post("/api/v1/jobs", json={"kind": "search", "spec": {"model": "tiny", **SPEC}})
            assert r.status_code == 202, r.text
            job = _wait_job(c, r.json()["id"], 300)
            assert job["state"] == "succeeded", (job["error"], c.get(f"/api/v1/jobs/{job['id']}/log").text[-2000:])
            result = job["result"]
            assert len(result["records"]) == 2 and result["best"] is not None
            assert result["frontier"] and all(r["drop"] is not None for r in result["frontier"])
            assert result["best"]["name"] in {m["name"] for m in c.get("/api/v1/models").json()["data"]}
            events = c.get(f"/api/v1/jobs/{job['id']}/events").text
            candidates = [e for e in (json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: "))
                          if e.get("type") == "candidate"]
            assert sorted(e["label"] for e in candidates) == sorted(r["label"] for r in result["records"])
            r = c.post("/api/v1/jobs", json={"kind": "search", "spec": {"model": "tiny", "objective": "speed"}})
            assert r.status_code == 400 and "objective" in r.json()["error"]["message"]
            r = c.post("/api/v1/jobs", json={"kind": "search", "spec": {"model": "tiny", "budget": "soon"}})
            assert r.status_code == 400 and "soon" in r.json()["error"]["message"]
            r = c.post("/api/v1/jobs", json={"kind": "search", "spec": {"model": "tiny", "workload": "chatty"}})
            assert r.status_code == 400 and "workload" in r.json()["error"]["message"]
    finally:
        p.close()


def test_a_search_left_running_by_a_dead_service_resumes_from_its_ledger(search_store, monkeypatch):
    home = search_store.home
    # both built, screened and probed; the smaller (int8) measured in full and in the ledger; the second
    # candidate's worker stops as its full evaluation starts
    env, marker = hooked_env(home, "slipstream.evaluation.run:evaluate", after=False,
                             when="args[0] == 'tiny-ct2-float32' and kwargs['settings'].max_tokens == 512")
    for key in ("PYTHONPATH", "SLIPSTREAM_TEST_HOOK", "SLIPSTREAM_TEST_MARKER", "SLIPSTREAM_TEST_WHEN",
                "SLIPSTREAM_TEST_AFTER"):
        monkeypatch.setenv(key, env[key])
    p = Platform(search_store, api_keys=["k"])
    with _client(p) as c:
        job_id = c.post("/api/v1/jobs", json={"kind": "search", "spec": {"model": "tiny", **SPEC}}).json()["id"]
        paused = int(wait_until(lambda: marker.exists() and marker.read_text(), 240, "never reached the full evaluation"))
        worker = c.get(f"/api/v1/jobs/{job_id}").json()["pid"]
    p.close()  # the service goes; then its worker dies (the machine rebooted, the OOM killer)
    os.killpg(worker, signal.SIGKILL)
    wait_until(lambda: gone(paused) and gone(worker), 20, "the search's processes outlived it")
    for key in ("SLIPSTREAM_TEST_HOOK", "PYTHONPATH"):
        monkeypatch.delenv(key)

    p = Platform(search_store, api_keys=["k"])
    try:
        with _client(p) as c:
            job = _wait_job(c, job_id, 300)
            assert job["state"] == "succeeded" and job["attempts"] == 2, job
            assert job["result"]["resumed"] == 1 and len(job["result"]["records"]) == 2
            events = c.get(f"/api/v1/jobs/{job_id}/events").text
            assert '"requeued"' in events
    finally:
        p.close()
