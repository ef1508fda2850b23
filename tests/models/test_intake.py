"""Model intake: directories, GGUF files, bundled models, and a clear one-line error for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slipstream.errors import InvalidModel, NotFound, UnsafeModel
from slipstream.models.checks import count_parameters
from slipstream.models.intake import import_model, resolve_source


def test_import_directory_registers_row(tiny_llama_dir, store):
    record = import_model(str(tiny_llama_dir), "tiny", store=store)
    assert record.kind == "model" and record.format == "hf"
    assert record.architecture == "LlamaForCausalLM"
    import torch  # noqa: F401  (counted independently below)
    from transformers import AutoModelForCausalLM

    expected = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_llama_dir).parameters())
    assert record.parameters == expected == count_parameters(list(record.path.glob("*.safetensors")))
    assert record.source == str(tiny_llama_dir.resolve())
    assert (record.path / "tokenizer.json").exists() and (record.path / "model.safetensors").exists()
    assert len(record.sha256) == 64 and record.size_bytes > 0


def test_wrong_path(store):
    with pytest.raises(NotFound, match="no such file or directory"):
        import_model("./does/not/exist", store=store)


def test_unknown_word_is_neither_file_nor_hub_id(store):
    with pytest.raises(NotFound, match="not a bundled model"):
        import_model("nonsense", store=store)


def test_directory_that_is_not_a_model(tmp_path, store):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidModel, match="no config.json"):
        import_model(str(tmp_path), store=store)


def test_corrupt_safetensors(tiny_llama_dir, tmp_path, store):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_llama_dir, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(InvalidModel, match="corrupt safetensors.*truncated"):
        import_model(str(bad), store=store)
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidModel, match="corrupt safetensors"):
        import_model(str(bad), store=store)
    assert store.list() == []


def _pickle_only(tiny_llama_dir: Path, dest: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_llama_dir, dest)
    state = load_file(dest / "model.safetensors")
    (dest / "model.safetensors").unlink()
    torch.save(state, dest / "pytorch_model.bin")
    return dest


def test_pickle_only_is_refused_unless_allowed(tiny_llama_dir, tmp_path, store):
    src = _pickle_only(tiny_llama_dir, tmp_path / "pickled")
    with pytest.raises(UnsafeModel, match="pickle weights.*--allow-pickle"):
        import_model(str(src), store=store)
    record = import_model(str(src), "from-pickle", allow_pickle=True, store=store)
    assert (record.path / "model.safetensors").exists()
    assert not list(record.path.glob("*.bin"))


def test_remote_code_is_refused_unless_asked(tiny_llama_dir, tmp_path, store):
    src = tmp_path / "remote"
    shutil.copytree(tiny_llama_dir, src)
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (src / "config.json").write_text(json.dumps(config))
    (src / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(UnsafeModel, match="--trust-remote-code"):
        import_model(str(src), store=store)
    assert store.list() == []


def test_missing_tokenizer_is_named(tiny_llama_dir, tmp_path, store):
    src = tmp_path / "notok"
    shutil.copytree(tiny_llama_dir, src)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (src / f).unlink(missing_ok=True)
    with pytest.raises(InvalidModel, match="no tokenizer files"):
        import_model(str(src), store=store)


def test_corrupt_gguf(tmp_path, store):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(InvalidModel, match="corrupt GGUF"):
        import_model(str(fake), store=store)
    not_gguf = tmp_path / "other.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 zip file")
    with pytest.raises(InvalidModel, match="not a GGUF file"):
        import_model(str(not_gguf), store=store)


def test_source_kinds(tiny_llama_dir, tmp_path):
    assert resolve_source("smollm2-135m").kind == "bundled"
    assert resolve_source(str(tiny_llama_dir)).kind == "directory"
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    weights = tmp_path / "pytorch_model.bin"
    weights.write_bytes(b"x")
    with pytest.raises(InvalidModel, match="bare weights file"):
        resolve_source(str(weights))


def test_hub_unreachable_is_one_clear_line(store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception) as info:
        import_model("HuggingFaceTB/SmolLM2-135M-Instruct", store=store)
    assert "hub" in str(info.value) and "\n" not in str(info.value)
    assert store.list() == []
