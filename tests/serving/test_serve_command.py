"""``slipstream serve`` as a real process: its banner, and SIGTERM with and without enough grace."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

PROMPT = "Robert Boulter is an English actor who"
CLI = [sys.executable, "-c", "from slipstream.cli.main import main; main()"]


class ServeProcess:
    def __init__(self, home: Path, *args: str):
        env = {**os.environ, "SLIPSTREAM_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([*CLI, "serve", *args, "--port", "0", "--threads", "1"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 120
        while not any("endpoints" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("serve did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)
        self.url = re.search(r"listening on (http://\S+)", "\n".join(self.lines)).group(1)
        assert wait_ready(self.url)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def terminate_and_wait(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def text(self) -> str:
        return "\n".join(self.lines)


def wait_ready(url: str) -> bool:
    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def stream_tokens(url: str, out: list, index: int, first: threading.Event, api_key: str) -> None:
    """One 200-token streaming completion; out[index] = (tokens made, finish reason or the error)."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0)
    tokens, finish = 0, None
    try:
        for chunk in client.completions.create(model="tiny-served", prompt=PROMPT, max_tokens=200, temperature=0,
                                               stream=True, stream_options={"include_usage": True},
                                               extra_body={"ignore_eos": True}):
            first.set()
            if chunk.choices:
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
    except Exception as exc:  # noqa: BLE001 - recorded for the test to look at
        finish = exc
    out[index] = (tokens, finish)
    first.set()


def run_streams(url: str, count: int, api_key: str = "none") -> tuple[list, list[threading.Thread], threading.Event]:
    out: list = [None] * count
    first = threading.Event()
    threads = [threading.Thread(target=stream_tokens, args=(url, out, i, first, api_key)) for i in range(count)]
    for t in threads:
        t.start()
    assert first.wait(60) and out[0] is None, out  # the first is still streaming
    return out, threads, first


@pytest.fixture(scope="module")
def home(serve_store):
    return serve_store.home


def test_banner_then_sigterm_lets_requests_in_flight_finish(home):
    server = ServeProcess(home, "tiny", "--served-model-name", "tiny-served", "--grace-period", "30",
                          "--max-batch-size", "1", "--set", "defaults.temperature=0.5", "--api-key", "secret")
    try:
        banner = server.text()
        assert re.search(r"listening on http://127\.0\.0\.1:\d+", banner)
        assert "model      tiny-served (context 256 tokens)" in banner
        assert re.search(r"engine     transformers \(float32, cpu, 1 threads, gemm=\w+\)", banner)
        assert "batching   continuous, max_batch_size=1, max_queue=64, kv_cache_dtype=auto" in banner
        assert "temperature=0.5" in banner and "api keys   1" in banner and "secret" not in banner
        assert "SIGTERM: 30 s grace" in banner
        url = server.url
        out, threads, _ = run_streams(url, 3, api_key="secret")  # one runs, two wait in the queue
        rc = server.terminate_and_wait(60)
        for t in threads:
            t.join(30)
    finally:
        server.kill()
    assert rc == 0
    assert out == [(200, "length")] * 3  # all finished within the grace period, queued ones included
    log = server.text()
    assert re.search(r"shutting down on signal 15; [1-3] request\(s\) in flight, 30 s grace", log)
    assert "stopped (signal 15)" in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)


def test_sigterm_cancels_what_the_grace_period_cannot_finish(home):
    server = ServeProcess(home, "tiny", "--served-model-name", "tiny-served", "--grace-period", "0.2",
                          "--max-batch-size", "1")
    try:
        out, threads, _ = run_streams(server.url, 8)  # 8 x 200 tokens, one at a time: far more than 0.2 s
        start = time.monotonic()
        rc = server.terminate_and_wait(60)
        took = time.monotonic() - start
        for t in threads:
            t.join(30)
    finally:
        server.kill()
    assert rc == 0 and took < 20
    assert all(o is not None for o in out)  # every client got an answer or an error, none hung
    finished = [o for o in out if o == (200, "length")]
    assert len(finished) < 8  # the grace period ran out and the rest were cancelled
    assert "stopped (signal 15)" in server.text()


def test_banner_names_the_ctranslate2_engine_and_its_dynamic_batching(engines):
    from slipstream.serving.server import banner
    from slipstream.serving.settings import DeploymentSettings

    lines = banner("http://127.0.0.1:9", "tiny-ct2", engines["tiny-ct2"],
                   DeploymentSettings(batch_window_ms=7, semantic_cache={"enabled": True, "threshold": 0.9}))
    text = "\n".join(lines)
    assert "engine     ctranslate2 (float32, cpu, 1 threads)" in text
    assert "batching   dynamic, max_batch_size=16, max_queue=64, window=7.0 ms" in text
    assert "semantic=on (threshold 0.9)" in text and "http://127.0.0.1:9/metrics" in text


def test_engine_options_from_settings_environment_and_command_line_reach_the_engine(home, tmp_path, monkeypatch):
    """A settings file's ``engine:`` section reaches the engine, over the environment's switches and under
    ``--engine-option``; the banner prints every option in force."""
    config = tmp_path / "deploy.yaml"
    config.write_text("engine:\n  gemm: torch\n  batch_size: 4\n  decode_attention: c\n")
    monkeypatch.setenv("SLIPSTREAM_DECODE_ATTENTION", "torch")  # under the file's decode_attention: c
    monkeypatch.setenv("SLIPSTREAM_FUSED_PREFILL", "0")  # nothing over it
    server = ServeProcess(home, "tiny", "--config", str(config), "--engine-option", "batch_size=2")
    try:
        banner = server.text()
        assert re.search(r"engine     transformers \(float32, cpu, 1 threads, gemm=torch\)", banner)
        assert ("options    threads=1 batch_size=2 dtype=float32 gemm=torch int8_gemm=on head_dtype=auto "
                "fused_prefill=off decode_attention=c kv_cache_dtype=auto") in banner
        reply = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0).completions.create(
            model="tiny", prompt=PROMPT, max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens >= 1
    finally:
        server.kill()


def test_an_engine_option_the_engine_does_not_take_is_refused_at_start(home, tmp_path):
    config = tmp_path / "deploy.yaml"
    config.write_text("engine:\n  compute_type: int8\n")  # CTranslate2's, not the transformers engine's
    env = {**os.environ, "SLIPSTREAM_HOME": str(home)}
    for args, message in ((["--config", str(config)], "engine 'transformers' has no option 'compute_type'"),
                          (["--engine-option", "gemmm=torch"], "engine 'transformers' has no option 'gemmm'"),
                          (["--set", "engine.gemmm=torch"], "engine: Value error, no engine takes option 'gemmm'")):
        proc = subprocess.run([*CLI, "serve", "tiny", "--port", "0", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and message in proc.stderr, proc.stderr
