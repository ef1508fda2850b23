"""Fixtures for deployments: a store with a chat model and two CTranslate2 variants; a local Ray instance."""

from __future__ import annotations

import shutil
import socket

import pytest


@pytest.fixture(scope="session")
def deploy_store(tmp_path_factory, tiny_llama_dir):
    """``tiny`` (transformers, chat template), ``tiny-ct2`` (float32), ``tiny-ct2-int8``, and ``wide`` (a
    larger random Llama, slow enough per token for a request to still be running while a test acts)."""
    from tests.conftest import build_tiny_llama

    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store
    from tests.serving.conftest import CHAT_TEMPLATE

    pytest.importorskip("ctranslate2")
    src = tmp_path_factory.mktemp("deploy-chat") / "model"
    shutil.copytree(tiny_llama_dir, src)
    (src / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    store = Store(tmp_path_factory.mktemp("deploy-home"))
    import_model(str(src), "tiny", store=store)
    optimize("tiny", "ctranslate2", {"quantization": "float32"}, name="tiny-ct2", store=store)
    optimize("tiny", "ctranslate2", {"quantization": "int8"}, name="tiny-ct2-int8", store=store)
    wide = build_tiny_llama(tmp_path_factory.mktemp("deploy-wide") / "model", layers=8, hidden=512)
    import_model(str(wide), "wide", store=store)
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance with 4 logical CPUs (replicas take fractions), shut down after the module; yields
    the port its endpoint listens on (Serve binds it once, when it starts)."""
    pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")
    import ray
    from ray import serve

    from slipstream.deploy import ray_app

    ray_app.connect(num_cpus=4)
    yield free_port()
    serve.shutdown()
    ray.shutdown()
