"""Fixtures for the serving tests: the tiny model with a chat template, in both engines."""

from __future__ import annotations

import shutil

import pytest

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


@pytest.fixture(scope="session")
def serve_store(tmp_path_factory, tiny_llama_dir):
    """A store with ``tiny`` (transformers, chat template) and ``tiny-ct2`` (CTranslate2 float32)."""
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    src = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(tiny_llama_dir, src)
    (src / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    store = Store(tmp_path_factory.mktemp("serve-home"))
    import_model(str(src), "tiny", store=store)
    pytest.importorskip("ctranslate2")
    optimize("tiny", "ctranslate2", {"quantization": "float32"}, name="tiny-ct2", store=store)
    return store


@pytest.fixture(scope="session")
def engines(serve_store):
    from slipstream.engines.loading import open_engine

    return {"tiny": open_engine("tiny", store=serve_store, threads=1),
            "tiny-ct2": open_engine("tiny-ct2", store=serve_store, threads=1)}
