"""Engine options from the command line: ``--engine-option key=value`` (repeatable), and the environment
variables that switched the transformers engine's kernels before it had typed options.

The environment is read here, at the CLI's edge, and nowhere else: no engine module reads it. For the
engines that take them, the variables give the lowest layer of options; a deployment's settings file
(``engine:``) goes over them, and ``--engine-option`` over both. Library callers pass options to
:func:`slipstream.engines.loading.open_engine` and are not affected by the environment.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from slipstream.errors import InvalidConfig

# variable -> the engine option it sets (all of them the transformers engine's)
ENVIRONMENT = {
    "SLIPSTREAM_GEMM": "gemm",  # auto, torch, openblas or onednn
    "SLIPSTREAM_INT8_GEMM": "int8_gemm",  # 0: off; anything else: on
    "SLIPSTREAM_HEAD_DTYPE": "head_dtype",  # bfloat16
    "SLIPSTREAM_FUSED_PREFILL": "fused_prefill",  # 0: off; anything else: on
    "SLIPSTREAM_DECODE_ATTENTION": "decode_attention",  # torch: PyTorch's kernel; c: the C kernel
}
_ON_UNLESS_ZERO = {"int8_gemm", "fused_prefill"}

HELP = "Engine option key=value (repeatable), e.g. gemm=onednn or compute_type=int8; see docs/engines.md"


def parse_option(text: str) -> tuple[str, str]:
    """``key=value`` from ``--engine-option``; the value stays a string, parsed by the option's type."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidConfig(f"--engine-option expects key=value (e.g. gemm=onednn), got {text!r}")
    return key.strip().replace("-", "_"), value.strip()


def from_environment(engine: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The options the environment sets that ``engine`` takes (none for the other engines)."""
    from slipstream.engines.options import options_class

    environ = os.environ if environ is None else environ
    names = options_class(engine).names()
    found: dict[str, str] = {}
    for variable, option in ENVIRONMENT.items():
        value = environ.get(variable)
        if not value or option not in names:
            continue
        if option in _ON_UNLESS_ZERO:
            value = "off" if value == "0" else "on"
        elif option == "decode_attention":
            value = value.lower()
        found[option] = value
    return found


def engine_options(engine: str, assignments: Sequence[str] | None = None, settings: Mapping[str, Any] | None = None,
                   environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Options for ``engine``: the environment's, then ``settings`` (a settings file's ``engine:``), then
    ``--engine-option`` assignments. Checked against the engine's options here, so a typo is refused
    (naming the key and listing the valid ones) before anything loads."""
    from slipstream.engines.options import options_class

    merged: dict[str, Any] = {**from_environment(engine, environ), **(settings or {})}
    merged.update(parse_option(a) for a in assignments or ())
    options_class(engine).of(merged)
    return merged
