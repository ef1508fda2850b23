"""Engine options at the CLI's edge: the environment read once there, a settings file's ``engine:`` over
it, ``--engine-option`` over both; typos refused before anything loads."""

from __future__ import annotations

import pytest

from slipstream.cli.engine_options import ENVIRONMENT, engine_options, from_environment, parse_option
from slipstream.errors import InvalidConfig

LEGACY = {"SLIPSTREAM_GEMM": "onednn", "SLIPSTREAM_INT8_GEMM": "0", "SLIPSTREAM_HEAD_DTYPE": "bfloat16",
          "SLIPSTREAM_FUSED_PREFILL": "1", "SLIPSTREAM_DECODE_ATTENTION": "TORCH"}


def test_the_environment_variables_become_transformers_options():
    assert set(ENVIRONMENT) == set(LEGACY)
    assert from_environment("transformers", LEGACY) == {
        "gemm": "onednn", "int8_gemm": "off", "head_dtype": "bfloat16", "fused_prefill": "on",
        "decode_attention": "torch"}
    assert from_environment("transformers", {"SLIPSTREAM_INT8_GEMM": "yes", "SLIPSTREAM_GEMM": ""}) == {
        "int8_gemm": "on"}  # as before: anything but 0 is on; an empty variable is unset
    assert from_environment("ctranslate2", LEGACY) == {}  # engines that never read them are not affected


def test_command_line_wins_over_settings_over_environment():
    env = {"SLIPSTREAM_GEMM": "onednn", "SLIPSTREAM_FUSED_PREFILL": "0"}
    options = engine_options("transformers", ["gemm=torch", "threads=2"], {"fused_prefill": True, "gemm": "openblas"},
                             environ=env)
    assert options == {"gemm": "torch", "fused_prefill": True, "threads": "2"}
    assert engine_options("ctranslate2", ["compute_type=int8"], environ=env) == {"compute_type": "int8"}


@pytest.mark.parametrize("engine,assignments,settings,message", [
    ("transformers", ["gemmm=torch"], None, "engine 'transformers' has no option 'gemmm'; its options: threads"),
    ("transformers", [], {"compute_type": "int8"}, "engine 'transformers' has no option 'compute_type'"),
    ("ctranslate2", ["gemm=torch"], None, "engine 'ctranslate2' has no option 'gemm'"),
    ("transformers", ["gemm"], None, "--engine-option expects key=value"),
    ("transformers", ["head_dtype=int8"], None, "head_dtype='int8' is not valid"),
])
def test_typos_are_refused_before_loading(engine, assignments, settings, message):
    with pytest.raises(InvalidConfig) as info:
        engine_options(engine, assignments, settings, environ={})
    assert message in str(info.value)


def test_parse_option():
    assert parse_option("fused-prefill=off") == ("fused_prefill", "off")
    assert parse_option(" compute_type = int8 ") == ("compute_type", "int8")


def test_no_engine_module_reads_the_environment():
    """The variables are read at the CLI's edge only (issue 23)."""
    from pathlib import Path

    import slipstream.engines

    root = Path(slipstream.engines.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for variable in ENVIRONMENT:
            assert variable not in text, f"{path.relative_to(root)} mentions {variable}"
