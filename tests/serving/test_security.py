"""The server's security promises: /health is the only route open without a key; keys are compared in constant
time against every key, and never appear in a response, /metrics, the banner or the logs; a server reachable
beyond loopback needs a key or an explicit --allow-unauthenticated."""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys

import httpx
import pytest

from slipstream.errors import InvalidConfig
from slipstream.serving.auth import check_exposure, is_loopback
from slipstream.serving.settings import DeploymentSettings
from tests.serving.fakes import FakeEngine
from tests.serving.running import RunningServer

KEY = "sk-right-" + secrets.token_hex(8)
OTHER = "sk-other-" + secrets.token_hex(8)
WRONG = "sk-wrong-" + secrets.token_hex(8)
SECRETS = (KEY, OTHER, WRONG, KEY[3:], WRONG[3:])  # the keys, and enough of each to tell


def routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters filled in. FastAPI 0.165 keeps an
    included router as one entry whose ``effective_candidates`` are its routes (with their final paths)."""
    out = []

    def walk(entries) -> None:
        for route in entries:
            if hasattr(route, "effective_candidates"):
                walk(route.effective_candidates())
                continue
            for method in sorted(getattr(route, "methods", None) or ()):
                if method not in ("HEAD", "OPTIONS"):
                    out.append((method, re.sub(r"\{[^}]*\}", "x", route.path)))

    walk(app.routes)
    return out


def test_health_is_the_only_route_open_without_a_key():
    with RunningServer(FakeEngine(), DeploymentSettings(api_keys=[KEY]), "fake") as server:
        served = routes(server.app)
        assert ("GET", "/health") in served and ("POST", "/v1/completions") in served and len(served) >= 5
        for method, path in served:
            for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": KEY},
                            {"Authorization": f"Basic {KEY}"}):
                reply = httpx.request(method, server.url + path, headers=headers, json={})
                if path == "/health":
                    assert reply.status_code == 200, (method, path)
                else:
                    assert reply.status_code == 401, (method, path, headers, reply.text)
            ok = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {KEY}"}, json={})
            assert ok.status_code != 401, (method, path)


def test_every_key_is_compared_in_constant_time(monkeypatch):
    """hmac.compare_digest on equal-length digests, against every configured key even when the first matches
    (no early exit that would tell which key, or how much of one, was right)."""
    import hmac

    from slipstream.serving import auth

    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    with RunningServer(FakeEngine(), DeploymentSettings(api_keys=[KEY, OTHER, "k3"]), "fake") as server:
        for given, status in ((KEY, 200), (WRONG, 401), ("k", 401), (KEY + "x", 401)):
            calls.clear()
            reply = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {given}"})
            assert reply.status_code == status
            assert calls == [(32, 32)] * 3, calls


def test_keys_never_appear_in_responses_metrics_banner_or_logs(caplog, capfd):
    from slipstream.serving.server import banner

    settings = DeploymentSettings(api_keys=[KEY, OTHER])
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with RunningServer(FakeEngine(), settings, "fake") as server:
        good = {"Authorization": f"Bearer {KEY}"}
        exchanges = [
            ("GET", "/v1/models", {"Authorization": f"Bearer {WRONG}"}, None),
            ("GET", "/v1/models", {"Authorization": WRONG}, None),
            ("GET", "/metrics", {"Authorization": f"Basic {KEY}"}, None),
            ("POST", "/v1/completions", good, {"model": "fake", "prompt": "ab", "max_tokens": 3}),
            ("POST", "/v1/completions", good, {"model": "fake", "prompt": KEY, "max_tokens": 10 ** 9}),
            ("POST", "/v1/completions", good, {"model": "fake", "prompt": "ab", "max_tokens": "many"}),
            ("POST", "/v1/completions", good, {"model": "fake", "prompt": "ab", "logit_bias": {"1": 2}}),
            ("POST", "/v1/chat/completions", good, {"model": "fake", "messages": "nope"}),
            ("POST", "/v1/chat/completions", good, {"model": "fake", "messages": [{"role": "user", "content": "ab"}],
                                                    "max_tokens": 2, "stream": True}),
            ("GET", "/v1/nothing-here", good, None),
        ]
        for method, path, headers, body in exchanges:
            reply = httpx.request(method, server.url + path, headers=headers, json=body)
            assert reply.status_code < 500, (path, reply.text)
            text = reply.text
            if KEY in text:  # a prompt that is the key may come back as text the model was given: only there
                assert body and body.get("prompt") == KEY and "error" in reply.json(), text
                text = text.replace(KEY, "")
            seen += [text, str(reply.headers)]
        metrics = httpx.get(server.url + "/metrics", headers=good)
        assert metrics.status_code == 200 and "slipstream" in metrics.text
        seen.append(metrics.text)
    seen += banner("http://127.0.0.1:1", "fake", FakeEngine(), settings)
    seen.append(str(settings.summary()))
    captured = capfd.readouterr()
    seen += [caplog.text, captured.out, captured.err]
    for text in seen:
        for secret in SECRETS:
            assert secret not in text, text[:2000]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "LOCALHOST", "localhost.", "::1",
                                  "[::1]", "::ffff:127.0.0.1"])
def test_loopback_needs_no_key(host):
    assert is_loopback(host)
    check_exposure(host, [], allow_unauthenticated=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "10.0.0.1", "fe80::1", "example.com",
                                  "localhost.example.com", "my-host"])
def test_beyond_loopback_needs_a_key_or_the_flag(host):
    assert not is_loopback(host)
    for keys in ([], [""]):  # an empty key is no key (the checker ignores it)
        with pytest.raises(InvalidConfig, match="refusing to listen on .* without an API key.*"
                                                "--allow-unauthenticated"):
            check_exposure(host, keys, allow_unauthenticated=False)
    check_exposure(host, [KEY], allow_unauthenticated=False)
    check_exposure(host, [], allow_unauthenticated=True)


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"SLIPSTREAM_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "slipstream.cli.main", "serve", "absent", "--port", "0", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_serve_refuses_to_listen_beyond_loopback_without_a_key(tmp_path):
    """Refused in one line before any model is looked up; with a key or the flag it goes on (and fails only
    because the variant is not in the empty store)."""
    config = tmp_path / "deploy.yaml"
    config.write_text("host: 0.0.0.0\n")
    for args in (["--host", "0.0.0.0"], ["--set", "host=192.168.1.5"], ["--config", str(config)]):
        proc = _serve(tmp_path, *args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert "refusing to listen on" in lines[0] and "--allow-unauthenticated" in lines[0]
    for args in (["--host", "0.0.0.0", "--api-key", KEY], ["--host", "0.0.0.0", "--allow-unauthenticated"],
                 ["--host", "127.0.0.1"]):
        proc = _serve(tmp_path, *args)
        assert proc.returncode == 1 and "no model or variant named 'absent'" in proc.stderr, proc.stderr
        assert "refusing" not in proc.stderr and KEY not in proc.stderr + proc.stdout
        assert ("with no API key" in proc.stderr) == ("--allow-unauthenticated" in args)
