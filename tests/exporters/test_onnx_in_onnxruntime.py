"""ONNX variants in plain ONNX Runtime with the tokenizer files of the variant directory: a greedy loop
written against the graph's documented inputs and outputs (and nothing of slipstream's) gives the same
tokens as slipstream's ONNX Runtime engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.quant_checks import PROMPTS

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def plain_greedy(directory: Path, prompt: str, max_tokens: int) -> list[int]:
    """Greedy decoding as a user would write it from the variant's README: feed an empty past first,
    then each step's ``present.*`` outputs as the next ``past.*`` inputs."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(directory / "tokenizer" / "tokenizer.json"))
    eos = json.loads((directory / "tokenizer" / "config.json").read_text())["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    pasts = [name for name in inputs if name.startswith("past.")]
    _, kv_heads, _, head_dim = inputs[pasts[0]].shape
    past = {name: np.zeros((1, kv_heads, 0, head_dim), np.float32) for name in pasts}
    seq = tok.encode(prompt).ids
    step, positions, out = seq, list(range(len(seq))), []
    for _ in range(max_tokens):
        feeds = {"input_ids": np.array([step], np.int64), "attention_mask": np.ones((1, len(seq)), np.int64),
                 "position_ids": np.array([positions], np.int64)} | past
        result = dict(zip(outputs, session.run(None, feeds)))
        token = int(result["logits"][0, -1].argmax())
        if token in eos:
            break
        out.append(token)
        seq.append(token)
        past = {"past." + name[len("present."):]: value for name, value in result.items()
                if name.startswith("present.")}
        step, positions = [token], [len(seq) - 1]
    return out


@pytest.fixture(scope="module")
def onnx_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("onnx-plain-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    for q in ("float32", "int8_dynamic"):
        optimize("tiny", "onnx", {"quantization": q}, name=f"tiny-{q}", store=store)
    return store


@pytest.mark.parametrize("quantization", ["float32", "int8_dynamic"])
def test_plain_onnxruntime_gives_slipstreams_greedy_tokens(onnx_store, quantization):
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    variant = onnx_store.get(f"tiny-{quantization}")
    engine = open_engine(variant, store=onnx_store, threads=1)
    for prompt in PROMPTS:
        ours = engine.generate([engine.tokenizer.encode(prompt)], SamplingParams(max_tokens=16))[0]
        assert len(ours.token_ids) > 0
        assert plain_greedy(variant.path, prompt, 16) == ours.token_ids


def test_the_readme_documents_the_graph(onnx_store):
    readme = (onnx_store.get("tiny-int8_dynamic").path / "README.md").read_text()
    assert "ONNX Runtime" in readme and "int8_dynamic" in readme
    for name in ("input_ids", "attention_mask", "position_ids", "past.0.key", "present.1.value", "logits"):
        assert f"`{name}`" in readme


# --- ONNX Runtime GenAI: its own tokenizer and generation loop over the same directory -----------------------

def genai_greedy(directory: Path, prompt: str, max_tokens: int, bos: int | None = None) -> list[int]:
    """GenAI's own tokenizer and loop; ``bos`` is put first by hand where GenAI's tokenizer leaves it out
    (it does for Gemma's SentencePiece vocabulary, whose model needs it)."""
    import onnxruntime_genai as og

    model = og.Model(str(directory))
    ids = [int(i) for i in og.Tokenizer(model).encode(prompt)]
    if bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    eos = json.loads((directory / "genai_config.json").read_text())["model"]["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    return out[:-1] if out and out[-1] in eos else out


@pytest.mark.parametrize("quantization", ["float32", "int8_dynamic"])
def test_onnxruntime_genai_runs_the_directory(onnx_store, quantization):
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (the onnx extra)")
    from transformers import AutoTokenizer

    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from tests.exporters.texts import sentences

    variant = onnx_store.get(f"tiny-{quantization}")
    lines = sentences()
    tokenizer = og.Tokenizer(og.Model(str(variant.path)))
    hf = AutoTokenizer.from_pretrained(variant.path / "tokenizer")
    assert [list(tokenizer.encode(line)) for line in lines] == [hf(line)["input_ids"] for line in lines]
    engine = open_engine(variant, store=onnx_store, threads=1)
    for prompt in PROMPTS:
        ours = engine.generate([engine.tokenizer.encode(prompt)], SamplingParams(max_tokens=16))[0]
        assert genai_greedy(variant.path, prompt, 16) == ours.token_ids


def test_onnxruntime_genai_runs_gemma3(tmp_path, tiny_gemma3_dir):
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (the onnx extra)")
    from slipstream.engines.onnxruntime import OnnxRuntimeEngine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.exporters.onnx import ONNX, export

    out = tmp_path / "gemma-onnx"
    out.mkdir()
    export(tiny_gemma3_dir, out, ONNX("float32"))
    assert json.loads((out / "genai_config.json").read_text())["model"]["type"] == "gemma3_text"
    engine = OnnxRuntimeEngine(out, threads=1)
    for prompt in PROMPTS[:2]:
        ours = engine.generate([engine.tokenizer.encode(prompt)], SamplingParams(max_tokens=16))[0]
        assert genai_greedy(out, prompt, 16) == ours.token_ids
