"""Cost and roofline arithmetic, checked by hand."""

from __future__ import annotations

import pytest

from slipstream.benchmark.cost import Price, Workload, cost, price_table, resolve_price
from slipstream.benchmark.roofline import MachinePeaks, TokenCost, roofline, token_cost
from slipstream.errors import InvalidConfig, NotFound


def test_dollars_per_million_tokens():
    price = Price("box", 0.36)
    c = cost(100.0, price)  # 100 tok/s = 360,000 tokens per hour for $0.36
    assert c["dollars_per_million_tokens"] == pytest.approx(1.0)
    w = cost(100.0, price, Workload(requests_per_month=1_000_000, output_tokens_per_request=500))["workload"]
    assert w["tokens_per_month"] == 5e8
    assert w["machine_hours_needed"] == pytest.approx(5e8 / 100 / 3600)  # 1388.9 h: two machines all month
    assert w["machines"] == 2 and w["monthly_cost_always_on"] == pytest.approx(2 * 730 * 0.36)


def test_price_table_has_dates_and_sources():
    rows = price_table()
    assert len(rows) >= 4
    for row in rows:
        assert row["price_per_hour"] > 0 and row["source"].startswith("https://") and row["date"]
    assert resolve_price("aws-g5.xlarge").price_per_hour == 1.006
    assert resolve_price(None, 2.5).price_per_hour == 2.5
    with pytest.raises(NotFound, match="known: aws-m7g.large"):
        resolve_price("mainframe")
    with pytest.raises(InvalidConfig):
        resolve_price(None, -1)


def test_roofline_share():
    peaks = MachinePeaks(1, bandwidth_bytes_per_s=10e9, matmul_flops_per_s=100e9, measured="", machine="")
    tc = TokenCost(parameters=100_000_000, weight_bytes=400e6, kv_bytes=0.0)
    r = roofline(20.0, tc, peaks)
    assert r["memory_bound_tokens_per_s"] == pytest.approx(25.0)  # 10 GB/s / 400 MB
    assert r["compute_bound_tokens_per_s"] == pytest.approx(500.0)  # 100 GFLOP/s / 200 MFLOP
    assert r["bound"] == "memory" and r["share_of_limit"] == pytest.approx(0.8)


def test_token_cost_from_files(session_store):
    import json

    record = session_store.get("tiny")
    config = json.loads((record.path / "config.json").read_text())
    tc = token_cost(record.path, "hf", config, context_tokens=100, kv_bytes_per_value=4, parameters=record.parameters)
    weights = sum(p.stat().st_size for p in record.path.glob("*.safetensors"))
    embedding = config["vocab_size"] * config["hidden_size"]
    # untied: the embedding table is looked up, not read whole
    assert tc.weight_bytes == pytest.approx(weights * (1 - embedding / record.parameters))
    assert tc.parameters == record.parameters - embedding
    kv = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * 16 * 100 * 4
    assert tc.kv_bytes == kv
