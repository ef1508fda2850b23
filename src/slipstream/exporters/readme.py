"""The README.md in every variant directory: what the variant is, which engine runs it, how to run it with
that engine's own tools (no slipstream on the path), and the figures slipstream measured for it.

A variant is a directory a user copies to another machine; the README travels with it. It is rendered
from the manifest and the registry's results, so it is written again whenever a figure is stored, and it
is not one of the variant's files (the manifest's digest covers the files that make the model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

README = "README.md"


def _gguf(name: str, path: Path) -> tuple[str, str]:
    return "llama.cpp", """The tokenizer, its special tokens and the chat template are inside `model.gguf`, so llama.cpp's own
tools need nothing else:

```bash
llama-cli -m model.gguf -p "The capital of France is" -n 32 --temp 0
llama-server -m model.gguf --port 8080          # OpenAI-compatible: POST /v1/chat/completions
```

```python
from llama_cpp import Llama  # pip install llama-cpp-python
llm = Llama(model_path="model.gguf")
print(llm.create_chat_completion([{"role": "user", "content": "Hello!"}], max_tokens=32)["choices"][0])
```

`tokenizer/` holds the original Hugging Face tokenizer and config, which split text exactly as
llama.cpp does with this file."""


def _ctranslate2(name: str, path: Path) -> tuple[str, str]:
    config = json.loads((path / "tokenizer" / "tokenizer_config.json").read_text()) \
        if (path / "tokenizer" / "tokenizer_config.json").exists() else {}
    chat = "chat_template" in config or (path / "tokenizer" / "chat_template.jinja").exists()
    prompt = ('tok.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True)'
              if chat else 'tok("The capital of France is")["input_ids"]')
    return "CTranslate2", f"""`model.bin`, `config.json` and the vocabulary are CTranslate2's; `tokenizer/` holds the model's
Hugging Face tokenizer (and its chat template, where it has one). CTranslate2 takes token strings:

```python
import ctranslate2                      # pip install ctranslate2 transformers
from transformers import AutoTokenizer
generator = ctranslate2.Generator(".", device="cpu")
tok = AutoTokenizer.from_pretrained("tokenizer")
ids = {prompt}
step = generator.generate_batch([tok.convert_ids_to_tokens(ids)], max_length=32, sampling_topk=1,
                                include_prompt_in_result=False)[0]
print(tok.decode(step.sequences_ids[0]))
```"""


_KV_GRAPH = """The graph takes the key/value cache as inputs and returns it as outputs: feed
`past.{i}.key`/`past.{i}.value` of length 0 on the first step (shape [batch, kv heads, 0, head dim]), then
each step's `present.{i}.*` outputs; `attention_mask` covers the past and the new tokens, `position_ids`
the new tokens' positions."""


def _onnx(name: str, path: Path) -> tuple[str, str]:
    rows = _onnx_signature(path / "model.onnx")
    return "ONNX Runtime", f"""`model.onnx` (and its external weights) run in plain ONNX Runtime; `tokenizer/` holds the model's
Hugging Face tokenizer. {_KV_GRAPH}

| name | kind | type | shape |
|---|---|---|---|
{rows}

```python
import numpy as np, onnxruntime as ort   # pip install onnxruntime tokenizers
from tokenizers import Tokenizer
session = ort.InferenceSession("model.onnx")
tok = Tokenizer.from_file("tokenizer/tokenizer.json")
```
A complete greedy loop over this graph is in slipstream's tests (`tests/exporters/test_onnx_in_onnxruntime.py`).

ONNX Runtime GenAI runs the directory as it is (`genai_config.json`, tokenizer files beside it), with its
own tokenizer and generation loop:

```python
import onnxruntime_genai as og          # pip install onnxruntime-genai
model = og.Model(".")
tok = og.Tokenizer(model)
params = og.GeneratorParams(model)
params.set_search_options(max_length=64)
generator = og.Generator(model, params)
generator.append_tokens(tok.encode("The capital of France is"))
while not generator.is_done():
    generator.generate_next_token()
print(tok.decode(generator.get_sequence(0)))
```"""


def _openvino(name: str, path: Path) -> tuple[str, str]:
    return "OpenVINO", f"""`openvino_model.xml` and `openvino_model.bin` are OpenVINO IR: slipstream's ONNX graph, converted, its
weights in float32 or as NNCF compressed them; `tokenizer/` holds the model's Hugging Face tokenizer.
{_KV_GRAPH}

```python
import numpy as np, openvino as ov       # pip install openvino tokenizers
from tokenizers import Tokenizer
# f32: the CPU plugin would otherwise compute in bf16 where the CPU has it
model = ov.Core().compile_model("openvino_model.xml", "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})
request = model.create_infer_request()
tok = Tokenizer.from_file("tokenizer/tokenizer.json")
```"""


def _onnx_signature(model: Path) -> str:
    try:
        import onnx
    except ImportError:
        return "| (install `onnx` to list the inputs) | | | |"
    graph = onnx.load(str(model), load_external_data=False).graph
    names = {init.name for init in graph.initializer}
    rows = []
    for kind, values in (("input", [v for v in graph.input if v.name not in names]), ("output", graph.output)):
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
            rows.append(f"| `{v.name}` | {kind} | {onnx.TensorProto.DataType.Name(t.elem_type).lower()} | "
                        f"[{', '.join(dims)}] |")
    return "\n".join(rows)


def _hf(name: str, path: Path) -> tuple[str, str]:
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    method = (config.get("quantization_config") or {}).get("quant_method")
    vllm = ("\n\nvLLM serves it as it is (compressed-tensors): `vllm serve .`"
            if method == "compressed-tensors" else "")
    needs = {"bitsandbytes": " bitsandbytes", "compressed-tensors": " compressed-tensors"}.get(method or "", "")
    return "transformers", f"""A Hugging Face checkpoint (safetensors); transformers loads it as it is:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer   # pip install transformers{needs}
model = AutoModelForCausalLM.from_pretrained(".")
tok = AutoTokenizer.from_pretrained(".")
out = model.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=32, do_sample=False)
print(tok.decode(out[0]))
```{vllm}"""


USAGE: dict[str, Callable[[str, Path], tuple[str, str]]] = {
    "gguf": _gguf, "ctranslate2": _ctranslate2, "onnx": _onnx, "openvino": _openvino, "hf": _hf,
}


def _encoder(fmt: str, path: Path) -> tuple[str, str]:
    """How to embed with an encoder variant in each engine's own library (mean pooling shown; the model's
    pipeline in ``1_Pooling/`` says which pooling it was trained with)."""
    pool = ("hidden = ...                      # [batch, tokens, dims]\n"
            "mask = enc['attention_mask'][..., None]\n"
            "vec = (hidden * mask).sum(1) / mask.sum(1)   # mean pooling, then normalise")
    if fmt == "ctranslate2":
        return "CTranslate2", f"""`model.bin` is CTranslate2's encoder; `tokenizer/` holds the Hugging Face tokenizer and pooling config:

```python
import ctranslate2, numpy as np               # pip install ctranslate2 transformers
from transformers import AutoTokenizer
encoder = ctranslate2.Encoder(".", device="cpu")
tok = AutoTokenizer.from_pretrained("tokenizer")
enc = tok(["A sentence to embed."], return_tensors="np")
hidden = np.asarray(encoder.forward_batch([list(map(int, enc["input_ids"][0]))]).last_hidden_state)
mask = enc["attention_mask"][..., None]
vec = (hidden * mask).sum(1) / mask.sum(1)    # mean pooling, then normalise
```"""
    if fmt == "onnx":
        return "ONNX Runtime", f"""`model.onnx` runs in plain ONNX Runtime (inputs `input_ids`, `attention_mask`; output the last hidden
states or a classifier's logits); `tokenizer/` holds the Hugging Face tokenizer and pooling config:

```python
import onnxruntime as ort                     # pip install onnxruntime transformers
from transformers import AutoTokenizer
session = ort.InferenceSession("model.onnx")
tok = AutoTokenizer.from_pretrained("tokenizer")
enc = tok(["A sentence to embed."], return_tensors="np")
hidden = session.run(None, {{"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}})[0]
mask = enc["attention_mask"][..., None]
vec = (hidden * mask).sum(1) / mask.sum(1)    # mean pooling, then normalise
```"""
    return "transformers", """A Hugging Face encoder (safetensors) with its sentence-transformers pooling files:

```python
from sentence_transformers import SentenceTransformer   # pip install sentence-transformers
model = SentenceTransformer(".")
print(model.encode(["A sentence to embed."]))
```

A head-pruned encoder (`slipstream_kept_heads` in config.json) loads through slipstream
(`slipstream serve`), which shrinks each layer's attention before reading the weights."""


def render(manifest: Any, path: Path, results: list[Any]) -> str:
    """The README for the variant in ``path`` from its manifest and its results in the registry."""
    technique = manifest.technique or {}
    options = ", ".join(f"{k}={v}" for k, v in technique.items() if k != "technique")
    from slipstream.models.tasks import ENCODER_TASKS

    if (manifest.extra or {}).get("task") in ENCODER_TASKS:
        engine, usage = _encoder(manifest.format, path)
    else:
        engine, usage = USAGE.get(manifest.format, lambda n, p: ("slipstream", ""))(manifest.name, path)
    lines = [f"# {manifest.name}", ""]
    if manifest.parent:
        lines.append(f"Made by slipstream from `{manifest.parent}` with `{technique.get('technique')}`"
                     + (f" ({options})" if options else "") + f"; runs on **{engine}**.")
    else:
        lines.append(f"Imported by slipstream from {manifest.source}; runs on **{engine}**.")
    lines += ["", f"Size: {manifest.size_bytes / 1e6:.1f} MB. Created {manifest.created}.", "", "## Run it", "",
              usage or "Run it with `slipstream serve` or `slipstream bench`.", "", "## Measured by slipstream", ""]
    lines += _figures(results) or ["Nothing measured yet: `slipstream evaluate " + manifest.name +
                                   "` and `slipstream bench " + manifest.name + "` record figures here."]
    return "\n".join(lines) + "\n"


def _figures(results: list[Any]) -> list[str]:
    """One row per measurement setting, the newest (a benchmark interleaved in rounds stores each round)."""
    latest = {(r.kind, r.key): r for r in results}
    rows = []
    for r in latest.values():
        cpu, when, m, st = r.machine.get("cpu", "?"), r.created[:10], r.metrics, r.settings
        if r.kind == "evaluation" and "perplexity" in m:
            tokens = f", {st['max_tokens']:,} tokens" if st.get("max_tokens") else ""
            against = (f"; KL {m['kl_mean']:.4f}, top-1 {m['top1_agreement']:.1%} against `{st.get('reference')}`"
                       if m.get("kl_mean") is not None and m.get("top1_agreement") is not None else "")
            rows.append(f"| {st.get('task', '?')}{tokens} | perplexity {m['perplexity']:.3f}{against} | {cpu} | {when} |")
        elif r.kind == "evaluation":
            scores = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, (int, float)))
            rows.append(f"| {st.get('task', '?')} | {scores} | {cpu} | {when} |")
        elif r.kind == "benchmark" and m.get("kind") == "encoder":
            lat = m["latency"]
            batches = ", ".join(f"batch {t['batch_size']} {t['sentences_per_s']['median']:.1f}/s" for t in m["throughput"])
            rows.append(f"| speed, {(m.get('engine') or {}).get('threads') or '?'} thread(s) | "
                        f"{lat['sentences_per_s']['median']:.1f} sentences/s one at a time (p50 "
                        f"{lat['latency_s']['p50'] * 1e3:.1f} ms); {batches}; peak RSS "
                        f"{m.get('memory', {}).get('peak_rss_bytes', 0) / 1e6:.0f} MB | {cpu} | {when} |")
        elif r.kind == "benchmark" and "latency" in m:
            lat = m["latency"]
            threads = st.get("threads") or (m.get("engine") or {}).get("threads")
            shape = f"{st['prompt_tokens']} prompt + {st['output_tokens']} new tokens, " \
                if st.get("prompt_tokens") and st.get("output_tokens") else ""
            rows.append(f"| speed, batch 1, {shape}{threads or '?'} thread(s) | "
                        f"{lat['decode_tokens_per_s']['median']:.1f} tokens/s, TTFT p50 "
                        f"{lat['ttft_s']['p50'] * 1e3:.0f} ms, peak RSS "
                        f"{m.get('memory', {}).get('peak_rss_bytes', 0) / 1e6:.0f} MB | {cpu} | {when} |")
    return ["| what | figure | CPU | date |", "|---|---|---|---|", *rows] if rows else []


def write(store: Any, name: str) -> Path:
    """Render ``name``'s README from the store and write it into the variant's directory."""
    variant = store.get(name)
    manifest = store.manifest(name)
    text = render(manifest, Path(variant.path), store.results(name))
    target = Path(variant.path) / README
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return target
