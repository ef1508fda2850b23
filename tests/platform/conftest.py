"""Fixtures for the platform's tests: the tiny model with a chat template (so deployments can chat)."""

from __future__ import annotations

import shutil

import pytest

from tests.serving.conftest import CHAT_TEMPLATE


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory, tiny_llama_dir):
    """The tiny random Llama's directory with a chat template: import it by path to get a chat model."""
    src = tmp_path_factory.mktemp("tiny-chat") / "model"
    shutil.copytree(tiny_llama_dir, src)
    (src / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return src
