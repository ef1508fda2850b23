"""compressed-tensors (llm-compressor) and bitsandbytes checkpoints load with
``transformers.AutoModelForCausalLM.from_pretrained`` alone, and with vLLM where an interpreter with vLLM
is found, and give the same greedy tokens as slipstream's engine, with no slipstream code on their path."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

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


def _ours(store, variant) -> list[list[int]]:
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    engine = open_engine(variant, store=store, threads=1)
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


def _vllm_python() -> str | None:
    from slipstream.engines import vllm_server as vs

    python = vs.find_python()
    return python if python and vs.has_vllm(python) else None


@pytest.mark.skipif(_vllm_python() is None, reason="no interpreter with vLLM (set SLIPSTREAM_VLLM_PYTHON or run "
                    "`make vllm`)")
@pytest.mark.parametrize("name", ["tiny-w8a8", "tiny-gptq"])
def test_vllm_alone_gives_slipstreams_greedy_tokens(checkpoint_store, name, tmp_path):
    variant = _variant(checkpoint_store, name)
    script = tmp_path / "run_vllm.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from vllm import LLM, SamplingParams
        if __name__ == "__main__":
            llm = LLM(model={str(variant.path)!r}, dtype="float32", gpu_memory_utilization=0.5, enforce_eager=True)
            outs = llm.generate({PROMPTS!r}, SamplingParams(max_tokens=16, temperature=0.0))
            print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
    """))
    done = subprocess.run([_vllm_python(), str(script)], capture_output=True, text=True, timeout=900,
                          env={"VLLM_CPU_KVCACHE_SPACE": "1", "PATH": "/usr/bin:/bin"})
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stderr[-2000:]
    theirs = [t for t in json.loads(lines[-1][len("RESULT "):])]
    eos = json.loads((variant.path / "generation_config.json").read_text()).get("eos_token_id")
    theirs = [t[:-1] if t and t[-1] == eos else t for t in theirs]
    assert theirs == _ours(checkpoint_store, variant)
