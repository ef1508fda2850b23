"""``slipstream deploy SPEC`` as a user runs it: Ray started by the command, then ``deploy status``,
``deploy scale`` and ``deploy stop`` from other processes; the first command exits when stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.deploy.conftest import free_port


def _slipstream(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slipstream.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_deploy_status_scale_stop_from_the_command_line(tmp_path, deploy_store):
    pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")
    port = free_port()
    spec = tmp_path / "deploy.yaml"
    spec.write_text(yaml.safe_dump({"port": port, "models": [
        {"name": "m", "variant": "tiny-ct2", "scaling": {"cpus_per_replica": 0.5, "threads_per_replica": 1}}]}))
    env = {**os.environ, "SLIPSTREAM_HOME": str(deploy_store.home), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "slipstream.cli.main", "deploy", str(spec), "--num-cpus", "4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if "serving until" in line:
                break
        assert any("serving until" in x for x in lines), "".join(lines)
        assert any("1 model(s) behind" in x for x in lines)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                       json={"model": "m", "prompt": "the river", "max_tokens": 4, "ignore_eos": True}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4

        status = _slipstream("deploy", "status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        st = json.loads(status.stdout)
        assert st["endpoint"]["url"] == f"http://127.0.0.1:{port}"
        (model,) = st["models"]
        assert (model["name"], model["variant"], model["running"]) == ("m", "tiny-ct2", 1)

        scaled = _slipstream("deploy", "scale", "m", "2", env=env, timeout=180)
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        st = json.loads(_slipstream("deploy", "status", "--json", env=env).stdout)
        assert st["models"][0]["running"] == 2 and st["models"][0]["max_replicas"] == 2
        text = _slipstream("deploy", "status", env=env).stdout
        assert "running 2" in text and "tiny-ct2" in text

        bad = _slipstream("deploy", "scale", "nope", "2", env=env)
        assert bad.returncode == 1 and "has no model 'nope'" in bad.stderr

        stopped = _slipstream("deploy", "stop", env=env)
        assert stopped.returncode == 0 and "stopped 2 application(s)" in stopped.stdout
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
