"""``slipstream auto``'s output read from typed search records: the progress lines, the table, --json."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from slipstream.search.recipes import Prior
from slipstream.search.record import LeftOut, NotRun, SearchRecord, Status
from slipstream.search.run import Confirmation, Reference, SearchResult

PASSED = SearchRecord(id="a", label="ct2-int8", steps=[{"technique": "ctranslate2", "quantization": "int8"}],
                      status=Status.PASSED, name="m-ct2-int8", size_bytes=140_000_000, drop=0.004, objective=80.0,
                      seconds=61.0, prior=Prior(4, 0.26, 0.4, 2), objective_ratio=3.9, confirmed_speedup=4.1)
MISSED = SearchRecord(id="b", label="gguf-q4_k_m", steps=[{"technique": "gguf", "quantization": "Q4_K_M"}],
                      status=Status.SCREENED_OUT, name="m-gguf-q4_k_m", size_bytes=100_000_000, drop=0.05,
                      max_drop=0.01, reason="even the best case on the screening slice is 4.10% worse", seconds=30.0)
DIED = SearchRecord.failed({"id": "c", "label": "awq-w4g128", "steps": []}, Status.ERROR,
                           "worker exited with code 9: MemoryError")


def fake_search(settings, *, store=None, executor=None, listener=None, report=None):
    reference = Reference(name=settings.model, metric="perplexity", value=20.0, size_bytes=542_000_000,
                          objective=20.0)
    listener({"event": "reference", "stage": "done", "reference": reference})
    listener({"event": "space", "candidates": 3, "resumed": 0, "order": ["ct2-int8"],
              "skipped": [LeftOut("ct2-int16", "needs a GPU")]})
    listener({"event": "start", "label": "gptq-w4g128", "index": 1, "of": 3, "rung": "probe",
              "stand_in": "rtn-w4g128", "time_left_s": 900.0})
    listener({"event": "probed", "time_left_s": 840.0, "record": SearchRecord(
        id="d", label="gptq-w4g128", steps=[], status=Status.PROBED, probe_ratio=0.8, probed_as="rtn-w4g128")})
    listener({"event": "start", "label": "ct2-int8", "index": 2, "of": 3, "rung": "probe", "time_left_s": 800.0})
    for record in (PASSED, MISSED, DIED):
        listener({"event": "finished", "record": record, "best": "m-ct2-int8", "time_left_s": 600.0})
    records = [MISSED, DIED, PASSED]
    return SearchResult(search_id="s1", settings={"gate": {"relative": True}}, reference=reference,
                        records=records, best=PASSED, frontier=[PASSED], closest=[], skipped=[],
                        not_run=[NotRun("onnx-fp32", "budget: 0s left, a candidate takes about 240s")],
                        confirmed=Confirmation(2, {}, {"m-ct2-int8": 4.1}, {"m-ct2-int8": 82.0}))


@pytest.fixture
def run_auto(monkeypatch):
    monkeypatch.setattr("slipstream.search.run.search", fake_search)
    from slipstream.cli.main import app

    return lambda *args: CliRunner().invoke(app, ["auto", "m", "--report", "", *args], catch_exceptions=False)


def test_table_and_progress_read_the_records(run_auto):
    result = run_auto()
    assert result.exit_code == 0, result.output
    out = result.output
    assert "original: perplexity 20, 542 MB" in out and "left out ct2-int16: needs a GPU" in out
    assert "passed, gate metric +0.40%, 3.90x the original · best so far: m-ct2-int8" in out
    assert "error (worker exited with code 9: MemoryError)" in out
    # the rung in brackets (printed as text, not read as console markup), and a stand-in said as such
    assert "[probe 1/3] gptq-w4g128 (probing its stand-in rtn-w4g128: same format, same speed) · 15.0 min left" in out
    assert "stand-in built; speed probe 0.80x the original's" in out
    assert "[screen+probe 2/3] ct2-int8 · 13.3 min left" in out
    # passing first, then by objective; the confirmed ratio; the frontier starred
    rows = [line for line in out.splitlines() if "│" in line]
    assert [r.split("│")[1].strip() for r in rows] == ["m-ct2-int8 ★", "m-gguf-q4_k_m", "awq-w4g128"]
    assert "4.10x" in rows[0] and "+5.00%" in rows[1] and "code 9" in rows[2]
    assert "not run: onnx-fp32 (budget: 0s left" in out
    assert "best: m-ct2-int8 (ct2-int8), +0.40% on the gate metric, 4.10x the original" in out


def test_json_is_the_records_as_the_ledger_writes_them(run_auto):
    result = run_auto("--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["best"] == PASSED.to_dict() and data["records"][1] == DIED.to_dict()
    assert data["not_run"] == [{"label": "onnx-fp32", "reason": "budget: 0s left, a candidate takes about 240s"}]
    assert data["confirmed"]["speedup"] == {"m-ct2-int8": 4.1} and data["reference"]["size_bytes"] == 542_000_000
