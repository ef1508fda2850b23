"""Search records: typed, with a status enum, and exactly the JSON lines the ledger has always held."""

import json

import pytest

from slipstream.search.ledger import Ledger
from slipstream.search.recipes import Prior
from slipstream.search.record import BenchSummary, Measurement, SearchRecord, Status, Worker

STEPS = [{"technique": "ctranslate2", "quantization": "int8"}]
MEASURED = {"drop": -0.002, "best_case_drop": -0.004, "candidate": 1877.9, "reference": 1881.7, "tokens": 1023,
            "items": None, "kl_mean": 0.003, "top1_agreement": 0.98, "perplexity": 1877.9}
BENCH = {"decode_tokens_per_s": 152.3, "tpot_p50_s": 0.0065, "tpot_p95_s": 0.0071, "ttft_p50_s": 0.0016,
         "batch_tokens_per_s": {"1": 140.2, "8": 610.5}, "peak_rss_bytes": 74825728,
         "engine": {"engine": "ctranslate2", "device": "cpu", "compute_type": "int8_float32", "threads": 1}}
PRIOR = {"speedup": 4, "size_ratio": 0.26, "pass_probability": 0.5, "minutes": 1}

# Every shape of ledger line the search wrote before records were typed (keys in the order it wrote them).
OLD_LINES = {
    "passed": {"id": "d49a5a8286e2a9f4", "label": "ct2-int8", "steps": STEPS, "worker": {"host": "vm", "pid": 16255},
               "max_drop": 0.05, "timings": {"build_s": 1.2, "screen_s": 0.3, "evaluate_s": 0.9, "benchmark_s": 4.1},
               "name": "tiny-ct2-int8", "size_bytes": 194567, "screen": MEASURED, "evaluation": MEASURED,
               "drop": -0.002, "bench": BENCH, "objective": 152.3, "status": "passed", "seconds": 6.6,
               "prior": PRIOR, "objective_ratio": 3.9, "confirmed_speedup": 4.1},
    "failed_gate": {"id": "x", "label": "x", "steps": STEPS, "worker": {"host": "vm", "pid": 1}, "max_drop": 0.01,
                    "timings": {"build_s": 1.0, "evaluate_s": 2.0}, "name": "m-x", "size_bytes": 10,
                    "evaluation": {k: v for k, v in MEASURED.items() if k not in ("kl_mean", "top1_agreement")},
                    "drop": 0.03, "objective": -10.0, "status": "failed_gate",
                    "reason": "perplexity +3.00% vs the original, allowed 1.00%", "seconds": 3.0, "prior": PRIOR},
    "screened_out": {"id": "y", "label": "y", "steps": STEPS, "worker": {"host": "vm", "pid": 2}, "max_drop": 0.0,
                     "timings": {"build_s": 0.1, "screen_s": 0.2}, "name": "m-y", "size_bytes": 10,
                     "screen": MEASURED, "status": "screened_out", "drop": 0.9, "objective": None,
                     "reason": "even the best case on the screening slice misses the gate", "seconds": 0.4,
                     "prior": PRIOR},
    "error in a stage": {"id": "z", "label": "z", "steps": STEPS, "worker": {"host": "vm", "pid": 3},
                         "max_drop": 0.01, "timings": {}, "status": "error", "stage": "build",
                         "reason": "RuntimeError: boom", "objective": None, "drop": None, "seconds": 0.1,
                         "prior": PRIOR},
    "dead worker": {"id": "w", "label": "w", "steps": STEPS, "status": "error", "objective": None, "drop": None,
                    "reason": "worker exited with code 9: MemoryError", "prior": PRIOR},
}


@pytest.mark.parametrize("shape", OLD_LINES)
def test_old_ledger_lines_round_trip_exactly(shape):
    line = json.loads(json.dumps(OLD_LINES[shape]))
    record = SearchRecord.from_dict(line)
    assert record.status is Status(line["status"]) and record.id == line["id"]
    assert record.to_dict() == line
    assert json.loads(json.dumps(record.to_dict())) == line


def test_records_are_typed():
    record = SearchRecord.from_dict(OLD_LINES["passed"])
    assert record.worker == Worker("vm", 16255) and record.prior == Prior(4, 0.26, 0.5, 1)
    assert isinstance(record.evaluation, Measurement) and record.evaluation.kl_mean == 0.003
    assert isinstance(record.bench, BenchSummary) and record.bench.batch_tokens_per_s["8"] == 610.5
    assert record.ratio == 4.1 and record.shown_name == "tiny-ct2-int8"  # confirmed side by side wins
    error = SearchRecord.from_dict(OLD_LINES["dead worker"])
    assert error.shown_name == "w" and error.ratio is None and error.worker is None


def test_status_reads_and_prints_as_its_value():
    assert [s.value for s in Status] == ["passed", "failed_gate", "screened_out", "probed", "error", "cancelled"]
    assert str(Status.PASSED) == f"{Status.PASSED}" == "passed" and Status("screened_out") is Status.SCREENED_OUT
    assert json.dumps(SearchRecord("a", "a", [], Status.FAILED_GATE).to_dict()["status"]) == '"failed_gate"'


def test_keys_from_a_later_version_are_kept():
    line = OLD_LINES["passed"] | {"energy_j": 12.5}
    line["bench"] = BENCH | {"joules_per_token": 0.2}
    record = SearchRecord.from_dict(line)
    assert record.extra == {"energy_j": 12.5} and record.bench.extra == {"joules_per_token": 0.2}
    assert record.to_dict() == line


def test_ledger_loads_old_lines_and_skips_what_is_not_a_record(tmp_path):
    ledger = Ledger(tmp_path / "s", {"v": 1})
    lines = [json.dumps(OLD_LINES["passed"]), json.dumps({"id": "q", "status": "no-such-status"}),
             json.dumps(OLD_LINES["dead worker"]), '{"id": "cut", "sta']
    ledger.path.write_text("\n".join(lines))
    loaded = Ledger(tmp_path / "s", {"v": 1}).load()
    assert list(loaded) == ["d49a5a8286e2a9f4", "w"]
    # the line cut short by a kill is left as it is, and the next record starts a line of its own
    rerun = SearchRecord.from_dict(OLD_LINES["screened_out"])
    ledger.append(rerun)
    assert json.loads(ledger.path.read_text().splitlines()[-1]) == OLD_LINES["screened_out"]
    assert list(Ledger(tmp_path / "s", {"v": 1}).load()) == ["d49a5a8286e2a9f4", "w", "y"]
