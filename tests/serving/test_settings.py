"""Deployment settings: file, overrides, limits checked, typos refused."""

from __future__ import annotations

import pytest

from slipstream.errors import InvalidConfig
from slipstream.serving.settings import DeploymentSettings, parse_assignment


def test_yaml_file_then_overrides(tmp_path):
    f = tmp_path / "deploy.yaml"
    f.write_text("max_batch_size: 8\ndefaults:\n  temperature: 0.2\n  max_tokens: 32\nlimits:\n  max_tokens: 64\n"
                 "semantic_cache:\n  enabled: true\n  threshold: 0.9\napi_keys: [k1]\n")
    s = DeploymentSettings.load(f, {"max_queue": 3, "defaults.top_k": 40, "port": None})
    assert (s.max_batch_size, s.max_queue, s.port) == (8, 3, 8000)
    assert (s.defaults.temperature, s.defaults.max_tokens, s.defaults.top_k) == (0.2, 32, 40)
    assert s.semantic_cache.enabled and s.semantic_cache.threshold == 0.9
    assert s.summary()["api_keys"] == "1 configured" and "k1" not in str(s.summary())
    j = tmp_path / "d.json"
    j.write_text('{"batching": "dynamic", "batch_window_ms": 20}')
    assert DeploymentSettings.load(j).batching == "dynamic"


@pytest.mark.parametrize("overrides,message", [
    ({"max_batchsize": 4}, "max_batchsize: Extra inputs are not permitted"),
    ({"defaults.max_tokens": 99, "limits.max_tokens": 50}, "defaults.max_tokens (99) is above limits.max_tokens"),
    ({"batching": "magic"}, "batching"),
    ({"max_queue": -1}, "max_queue"),
    ({"kv_cache_dtype": "int8"}, "kv_cache_dtype"),
    ({"engine.gemmm": "torch"}, "engine: Value error, no engine takes option 'gemmm'; engine options: batch_size"),
])
def test_bad_settings_are_one_clear_error(overrides, message):
    with pytest.raises(InvalidConfig, match="invalid deployment settings") as info:
        DeploymentSettings.load(None, overrides)
    assert message in str(info.value)


def test_set_assignments_parse_yaml_values():
    assert parse_assignment("defaults.temperature=0.7") == ("defaults.temperature", 0.7)
    assert parse_assignment("defaults.stop=[a, b]") == ("defaults.stop", ["a", "b"])
    assert parse_assignment("exact_cache.enabled=false") == ("exact_cache.enabled", False)
    with pytest.raises(InvalidConfig):
        parse_assignment("novalue")


def test_engine_section_holds_engine_options(tmp_path):
    f = tmp_path / "deploy.yaml"
    f.write_text("engine:\n  gemm: onednn\n  kv_cache_dtype: bfloat16\n")
    s = DeploymentSettings.load(f, {"engine.fused_prefill": False})
    assert s.engine == {"gemm": "onednn", "kv_cache_dtype": "bfloat16", "fused_prefill": False}
    assert DeploymentSettings().engine == {}
