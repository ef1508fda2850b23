"""ONNX export for ONNX Runtime: float32, dynamic int8, static int8 calibrated on calibration text, or
blockwise int8 weights.

The graph comes from ``torch.onnx.export(dynamo=True)`` of a small wrapper whose inputs are flat
tensors (``input_ids``, ``attention_mask``, ``position_ids`` and one ``past.{i}.key`` /
``past.{i}.value`` pair per layer) and which builds a transformers ``DynamicCache`` from them; its
outputs are the logits and the ``present.{i}.key/value`` tensors, which the engine feeds back as the
next step's past. Prefill is the same graph with an empty past (length 0). optimum-onnx is not used:
it pins transformers below 4.58.

Quantization applies to the MatMuls that multiply by a weight (never to the rotary or attention MatMuls
between activations): dynamic int8 (int8 weights, activations quantized at run time, by default with
one scale per token, :mod:`slipstream.exporters.onnx_per_token`; ``activations="per_tensor"`` is ONNX
Runtime's ``quantize_dynamic``, one scale per tensor), ONNX Runtime's ``quantize_static`` (int8 weights and
activations, with activation ranges measured on calibration samples streamed from
:class:`~slipstream.calibration.Calibration`, which never overlaps evaluation text), or
``MatMulNBits`` 8-bit (``int8_blockwise``: weights in blocks of 32 with a scale each, the kernel
quantizing activations per block too). One scale per tensor is coarse for a prompt: a single
outlier token sets it for every token of the prefill (what that costs: docs/techniques.md#onnx-runtime), which is
why dynamic int8 scales each token apart by default. A few input channels with outlier values then
still set each token's scale; dynamic and static int8 split the 16 largest channels of each MatMul input
(found on the calibration text) out into float32 products by default (``outlier_channels``,
:mod:`slipstream.exporters.onnx_outliers`). ``keep_float`` leaves whole modules (the MLP down projections
and the output head hurt most) in float32, found by matching each MatMul's weight to the checkpoint's;
static int8 leaves the down projections and q/k/v in float32 by default: one range fixed at
calibration cannot follow the down projections' inputs from token to token, and on Gemma-3-270m the
attention's input holds most of what remains (docs/techniques.md#onnx-runtime). Static int8 multiplies
int8 inputs into a float32 output (ONNX Runtime's QDQ default would also requantize every MatMul's
output, the logits included).

The variant directory holds ``model.onnx`` (plus ``model.onnx.data`` for models over 2 GB), a
``tokenizer/`` folder with the parent's tokenizer and config.json, and ONNX Runtime GenAI's
``genai_config.json`` with the tokenizer files beside it (:mod:`slipstream.exporters.onnx_genai`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Literal

from slipstream.calibration import Calibration, model_cache_dir
from slipstream.errors import InvalidModel, Unsupported
from slipstream.exporters import onnx_genai
from slipstream.exporters.files import copy_tokenizer
from slipstream.extras import require
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig

Quantization = Literal["float32", "int8_dynamic", "int8_static", "int8_blockwise"]
Activations = Literal["per_token", "per_tensor"]
Ranges = Literal["minmax", "percentile"]
QUANTIZATIONS: tuple[str, ...] = Quantization.__args__  # type: ignore[attr-defined]
MODEL_FILE = "model.onnx"
OPSET = 18
# Decoders whose attention reads a plain DynamicCache and whose logits need nothing else.
ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"})
DEFAULT_OUTLIER_CHANNELS = 16  # int8_dynamic and int8_static, per distinct MatMul input
_EXTERNAL_BYTES = 1_800_000_000  # protobuf caps a file at 2 GB; bigger models keep weights beside it


STATIC_KEEP_FLOAT = ("down_proj", "q_proj", "k_proj", "v_proj")  # static int8's default keep_float


@dataclasses.dataclass(frozen=True)
class ONNX(TechniqueConfig):
    """Export to ONNX for ONNX Runtime with ``quantization``; static int8 calibrates on ``calibration``."""

    technique = "onnx"
    quantization: Quantization = "int8_dynamic"
    calibration: str = "wikitext2-valid"  # static int8, and outlier_channels
    samples: int = 32
    sequence_length: int = 256
    per_channel: bool = True  # dynamic/static: one weight scale per output channel (else one per tensor)
    # dynamic: one activation scale per token (slipstream's rewrite in standard ONNX operators) or per
    # tensor (ONNX Runtime's quantize_dynamic: a prompt's outlier token sets every token's scale)
    activations: Activations = "per_token"
    block_size: int = 32  # blockwise: weights sharing one scale along the input dimension
    # dynamic/static: 7-bit weights, so that uint8 x int8 pair sums fit the 16 bits that x86 int8
    # kernels without VNNI add them in (ONNX Runtime's advice); None: on when this CPU has no VNNI
    reduce_range: bool | None = None
    # dynamic/static: modules whose MatMuls stay float32, by name or its last parts ("down_proj",
    # "lm_head", "layers.0.mlp.down_proj"): int8 activations cost most where a few channels or tokens
    # carry outliers (the MLP down projections) and at the output head, whose error goes straight into
    # the logits. None: down_proj and q/k/v for int8_static, whose one fixed range per tensor cannot
    # follow the down projections' inputs from token to token (with every MatMul in int8 SmolLM2-135M and
    # Gemma-3-270m lose several percent of perplexity, with these in float under half a percent:
    # docs/techniques.md#onnx-runtime), () otherwise; (): every weight MatMul in int8
    keep_float: tuple[str, ...] | None = None
    # static: how calibration sets each activation range: the min and max seen (ONNX Runtime's
    # default), or the given percentile of the absolute values seen (clips rare outliers); percentile
    # holds every calibration activation in memory until the end (ONNX Runtime's HistogramCalibrater)
    ranges: Ranges = "minmax"
    percentile: float = 99.999
    # dynamic/static: per distinct MatMul input, this many input channels (those with the largest
    # values on the calibration text) stay float32 and the rest are quantized, so that a few outlier
    # channels no longer set every token's scale (slipstream.exporters.onnx_outliers). None: 16 for
    # int8_dynamic and int8_static (16 take dynamic int8 within 1% perplexity on SmolLM2-135M and
    # Gemma-3-270m, where none leaves SmolLM2 several percent off: docs/techniques.md#onnx-runtime), 0 for
    # the others; 0: none
    outlier_channels: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calibration_settings()  # a bad source or count fails here, before any work
        if self.keep_float is None:  # resolved here, so equal configs make the same variant
            object.__setattr__(self, "keep_float", self.default_keep_float())
        if self.keep_float and self.quantization not in ("int8_dynamic", "int8_static"):
            from slipstream.errors import InvalidConfig

            raise InvalidConfig("onnx: keep_float applies to int8_dynamic and int8_static only, "
                                f"not {self.quantization}")
        if self.activations != "per_token" and self.quantization != "int8_dynamic":
            from slipstream.errors import InvalidConfig

            raise InvalidConfig(f"onnx: activations={self.activations!r} applies to int8_dynamic only "
                                f"(int8_static scales activations per tensor, int8_blockwise per block)")
        if self.ranges != "minmax" and self.quantization != "int8_static":
            from slipstream.errors import InvalidConfig

            raise InvalidConfig(f"onnx: ranges={self.ranges!r} applies to int8_static only")
        if not 90.0 <= self.percentile < 100.0:
            from slipstream.errors import InvalidConfig

            raise InvalidConfig(f"onnx: percentile must be in [90, 100), got {self.percentile}")
        if self.outlier_channels is None:  # resolved here, so equal configs make the same variant
            object.__setattr__(self, "outlier_channels", self.default_outlier_channels())
        if self.outlier_channels < 0 or (self.outlier_channels
                                          and self.quantization not in ("int8_dynamic", "int8_static")):
            from slipstream.errors import InvalidConfig

            raise InvalidConfig("onnx: outlier_channels must be >= 0 and applies to int8_dynamic and "
                                f"int8_static only, got {self.outlier_channels} with {self.quantization}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            from slipstream.errors import InvalidConfig

            raise InvalidConfig(f"onnx: block_size must be a power of two >= 16, got {self.block_size}")

    def default_keep_float(self) -> tuple[str, ...]:
        return STATIC_KEEP_FLOAT if self.quantization == "int8_static" else ()

    def default_outlier_channels(self) -> int:
        return DEFAULT_OUTLIER_CHANNELS if self.quantization in ("int8_dynamic", "int8_static") else 0

    def calibration_settings(self) -> Calibration:
        return Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        short = {"float32": "fp32", "int8_dynamic": "int8-dynamic", "int8_static": "int8-static",
                 "int8_blockwise": "int8-blockwise"}
        if self.quantization == "int8_blockwise":
            return "onnx-int8-blockwise" + ("" if self.block_size == 32 else f"-b{self.block_size}")
        return (f"onnx-{short[self.quantization]}" + ("" if self.per_channel else "-pertensor")
                + ("" if self.activations == "per_token" else "-act-pertensor")
                + ("" if self.ranges == "minmax" else f"-p{self.percentile:g}")
                + ("" if self.outlier_channels == self.default_outlier_channels() else f"-oc{self.outlier_channels}")
                + {None: "", True: "-rr", False: "-fullrange"}[self.reduce_range]
                + self._keep_slug())

    def _keep_slug(self) -> str:
        if self.keep_float == self.default_keep_float():
            return ""
        if not self.keep_float:
            return "-keep-none"
        return "".join(f"-keep-{name.replace('.', '_')}" for name in self.keep_float)

    def resolved_reduce_range(self) -> bool:
        from slipstream.machine import has_int8_dot_product

        return (not has_int8_dot_product()) if self.reduce_range is None else self.reduce_range


# --- checks ----------------------------------------------------------------------------------------

def read_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.exists():
        raise InvalidModel(f"{src}: no config.json")
    return json.loads(path.read_text())


def check_model(src: Path) -> dict[str, Any]:
    cfg = read_config(src)
    model_type = cfg.get("model_type")
    if model_type not in ARCHITECTURES:
        raise Unsupported(f"ONNX export supports {', '.join(sorted(ARCHITECTURES))} decoders; "
                          f"{src.name} is {model_type!r}")
    return cfg


# --- the graph ---------------------------------------------------------------------------------------

def _wrapper(model: Any, layers: int) -> Any:
    import torch
    from transformers import DynamicCache

    class WithFlatCache(torch.nn.Module):
        """(input_ids, attention_mask, position_ids, *past) -> (logits, *present)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, past):  # type: ignore[no-untyped-def]
            cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return WithFlatCache()


def io_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def export_float(src: Path, path: Path) -> dict[str, Any]:
    """Export the transformers model in ``src`` as a float32 ONNX graph with a flat KV cache."""
    torch = require("torch", "core")
    require("onnxscript", "onnx", "ONNX export")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config.get_text_config(decoder=True)
    layers = cfg.num_hidden_layers
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    batch, seq, past_len, total = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    b, s, p = 2, 3, 4  # example sizes: none may be 0 or 1, or torch.export specializes on them
    example = (
        torch.randint(0, cfg.vocab_size, (b, s)),
        torch.ones(b, p + s, dtype=torch.long),
        torch.arange(p, p + s)[None].expand(b, s).contiguous(),
        tuple(torch.zeros(b, kv_heads, p, head_dim) for _ in range(2 * layers)),
    )
    shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq},
              tuple({0: batch, 2: past_len} for _ in range(2 * layers)))
    inputs, outputs = io_names(layers)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    external = weights > _EXTERNAL_BYTES
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_wrapper(model, layers), example, dynamo=True, input_names=inputs,
                                    output_names=outputs, dynamic_shapes=shapes, opset_version=OPSET,
                                    verbose=False, optimize=True)
    for node in program.model.graph.all_nodes():  # source locations: megabytes of text, no use at run time
        node.metadata_props.clear()
    program.save(str(path), external_data=external)
    return {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim, "external_data": external,
            "opset": OPSET}


def float_graph(src: Path, path: Path) -> dict[str, Any]:
    """:func:`export_float`'s graph of the store variant at ``src``, written at ``path``, exported once per model:
    kept in the store (``cache/onnx-float/``) under the model's content digest and this module's code, so the
    ONNX Runtime and OpenVINO recipes of a search (six in the default space), and later searches, copy one graph
    instead of each exporting it again (about a minute each for SmolLM2-135M on two cores). Outside a store it
    is exported at ``path``. The facts say which (``float_graph``: ``exported`` or ``read``)."""
    if path.name != MODEL_FILE:
        raise ValueError(f"the float graph is written as {MODEL_FILE}, not {path.name}")
    where = model_cache_dir(src, "onnx-float")
    if where is None:
        return export_float(src, path) | {"float_graph": "exported"}
    import torch
    import transformers

    root, digest = where
    key = hashlib.sha256(json.dumps([digest, OPSET, torch.__version__, transformers.__version__,
                                     hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]).encode()).hexdigest()[:24]
    kept, how = root / key, "read"
    if not (kept / "facts.json").exists():
        tmp = root / f"{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "facts.json").write_text(json.dumps(export_float(src, tmp / MODEL_FILE)))
        try:
            os.replace(tmp, kept)  # whole or absent, even with two recipes exporting at once
        except OSError:  # another recipe kept its graph first: use that one
            shutil.rmtree(tmp, ignore_errors=True)
        how = "exported"
    for f in kept.iterdir():  # the graph and its external data, under the names the graph refers to
        if f.name != "facts.json":
            shutil.copyfile(f, path.parent / f.name)
    return json.loads((kept / "facts.json").read_text()) | {"float_graph": how}


# --- quantization ------------------------------------------------------------------------------------

def calibration_feeds(src: Path, calibration: Calibration, layers: int, kv_heads: int,
                      head_dim: int, on_sample=lambda: None) -> Iterator[dict[str, Any]]:
    """One prefill feed (empty past) per calibration sample, produced as it is asked for."""
    import numpy as np

    from slipstream.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(src)
    names = io_names(layers)[0][3:]
    for ids in calibration.batches(tokenizer):
        n = len(ids)
        feed: dict[str, Any] = {"input_ids": np.asarray([ids], dtype=np.int64),
                                "attention_mask": np.ones((1, n), dtype=np.int64),
                                "position_ids": np.arange(n, dtype=np.int64)[None]}
        empty = np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
        feed |= {name: empty for name in names}
        on_sample()
        yield feed


def _reader(feeds: Iterator[dict[str, Any]], total: int = 0) -> Any:
    """ONNX Runtime's calibration reader over ``feeds``, streamed. With ``CalibStridedMinMax`` ONNX
    Runtime asks for consecutive ranges of ``total`` samples (``set_range``), one chunk per collection:
    the next chunk is simply the next samples of the stream."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        left: int | None = None  # samples left in the current range (None: no range set)

        def __len__(self) -> int:
            return total

        def set_range(self, start_index: int, end_index: int) -> None:
            self.left = end_index - start_index

        def get_next(self) -> dict[str, Any] | None:
            if self.left is not None:
                if self.left <= 0:
                    return None
                self.left -= 1
            return next(feeds, None)

    return Reader()


def percentile_stride(samples: int, most: int = 4) -> int:
    """Samples per collection for histogram ranges: ONNX Runtime's HistogramCalibrater keeps every
    activation of a collection in memory (for SmolLM2, 32 samples of 256 tokens at once need over 22 GB),
    and merges histograms across collections; the stride must divide the sample count."""
    return next(k for k in range(min(most, samples), 0, -1) if samples % k == 0)


def weight_matmuls(path: Path, external: bool = False, src: Path | None = None,
                   keep_float: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(MatMul nodes to quantize, MatMul nodes ``keep_float`` leaves in float32), among those that
    multiply by a stored weight. Only these are quantized: the others multiply two activations (rotary
    angles, attention's Q K^T and scores V), and quantizing those per tensor costs far more accuracy
    (rotary angles above all) for no saving on disk. A transposed tied output head to be quantized is
    folded into a weight of its own (rewriting ``path``); one kept in float keeps reading the embedding."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    found: dict[str, tuple[Any, str, bool]] = {}  # node name -> (node, weight name, stored transposed)
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        b = producers.get(node.input[1])
        if (b is not None and b.op_type == "Transpose" and b.input[0] in weights
                and len(weights[b.input[0]].dims) == 2):
            found[node.name] = (node, b.input[0], True)
        elif node.input[1] in weights:
            found[node.name] = (node, node.input[1], False)
    kept: set[str] = set()
    if keep_float:
        if src is None:
            raise ValueError("keep_float needs the checkpoint the graph was exported from")
        firsts = {}
        for name, (_, weight, transposed) in found.items():
            w = numpy_helper.to_array(weights[weight])
            firsts[name] = (w.shape[::-1], w[0, :8]) if transposed else (w.shape, w[:8, 0])  # as [in, out]
        kept = kept_float(firsts, src, keep_float)
    folded = False
    for name, (node, weight, transposed) in found.items():
        if transposed and name not in kept:
            array = numpy_helper.to_array(weights[weight]).T.copy()
            graph.initializer.append(numpy_helper.from_array(array, f"{weight}.transposed"))
            weights[f"{weight}.transposed"] = graph.initializer[-1]
            node.input[1] = f"{weight}.transposed"
            folded = True
    if folded:
        used = {i for n in graph.node for i in n.input}
        keep = [n for n in graph.node if n.op_type != "Transpose" or any(o in used for o in n.output)]
        del graph.node[:]
        graph.node.extend(keep)
        onnx.save(model, str(path), save_as_external_data=external)
    return [n for n in found if n not in kept], [n for n in found if n in kept]


def matmul_modules(firsts: dict[str, tuple[tuple[int, ...], Any]], src: Path) -> dict[str, str]:
    """MatMul node name -> the transformers module whose weight it multiplies by (the exporter's node
    and weight names do not say), found by matching each weight ([in, out]: its shape and first eight
    values down the first column) to a checkpoint matrix ([out, in]). A tied output head is ``lm_head``."""
    import numpy as np
    from safetensors import safe_open

    def key(shape: tuple[int, ...], values: Any) -> tuple:
        return (tuple(int(d) for d in shape), np.asarray(values, dtype=np.float32).tobytes())

    modules: dict[tuple, str] = {}
    tied = read_config(src).get("tie_word_embeddings", True)
    for file in sorted(src.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            names = set(f.keys())
            for name in names:
                sl = f.get_slice(name)
                dims = sl.get_shape()
                if len(dims) != 2 or not name.endswith(".weight"):
                    continue
                module = name[: -len(".weight")]
                if module.endswith("embed_tokens"):
                    if not tied or "lm_head.weight" in names:
                        continue
                    module = "lm_head"
                modules.setdefault(key((dims[1], dims[0]), sl[0:1, 0:8].float().numpy()[0]), module)
    return {node: modules[k] for node, (shape, first) in firsts.items() if (k := key(shape, first)) in modules}


def kept_float(firsts: dict[str, tuple[tuple[int, ...], Any]], src: Path, patterns: tuple[str, ...]) -> set[str]:
    """The MatMul nodes of the modules ``patterns`` name; a pattern that names none is an error."""
    from slipstream.config import modules_named

    modules = matmul_modules(firsts, src)
    named = modules_named(set(modules.values()), patterns, "onnx")
    return {node for node, module in modules.items() if module in named}


def split_outlier_channels(path: Path, nodes: list[str], config: ONNX, src: Path, shape: dict[str, Any],
                           external: bool, progress: Progress | None = None) -> dict[str, Any]:
    """Find each quantized MatMul input's ``config.outlier_channels`` largest channels on the
    calibration text and split them out into float32 products (rewriting ``path``)."""
    from slipstream.exporters.onnx_outliers import channel_maxima, matmul_inputs, outlier_channels, split_outliers

    groups = matmul_inputs(path, nodes)
    calibration = config.calibration_settings()
    with or_null(progress).task(f"finding outlier channels on {calibration.source}",
                                total=calibration.samples) as bar:
        feeds = calibration_feeds(src, calibration, shape["layers"], shape["kv_heads"], shape["head_dim"],
                                  bar.advance)
        maxima = channel_maxima(path, list(groups), feeds)
    channels = {x: outlier_channels(m, config.outlier_channels) for x, m in maxima.items()}
    split = split_outliers(path, path, groups, channels, external)
    return {"outlier_channels": {"per_input": config.outlier_channels, "inputs": len(groups), "total": split,
                                 "calibration": {"source": calibration.source, "samples": calibration.samples,
                                                 "sequence_length": calibration.sequence_length}}}


def quantize(inp: Path, out: Path, config: ONNX, src: Path, shape: dict[str, Any],
             progress: Progress | None = None) -> dict[str, Any]:
    require("onnxruntime", "onnx", "ONNX Runtime quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    external = bool(shape["external_data"])
    nodes, kept = weight_matmuls(inp, external, src, config.keep_float)
    reduce_range = config.resolved_reduce_range()
    facts: dict[str, Any] = {"quantized_matmuls": len(nodes), "float_matmuls": len(kept), "reduce_range": reduce_range}
    if config.outlier_channels:
        facts |= split_outlier_channels(inp, nodes, config, src, shape, external, progress)
    if config.quantization == "int8_dynamic" and config.activations == "per_token":
        from slipstream.exporters.onnx_per_token import quantize_per_token

        quantize_per_token(inp, out, nodes, per_channel=config.per_channel, reduce_range=reduce_range,
                           external=external)
        return facts | {"activations": "per_token"}
    if config.quantization == "int8_dynamic":
        quantize_dynamic(str(inp), str(out), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                         per_channel=config.per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                         use_external_data_format=external)
        return facts | {"activations": "per_tensor"}
    if config.quantization == "int8_blockwise":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer)

        # accuracy_level 4: the kernel quantizes activations to int8 per block of the same size, so
        # no single outlier token sets the scale for the whole batch (as per-tensor dynamic int8 does)
        algo = DefaultWeightOnlyQuantConfig(block_size=config.block_size, is_symmetric=True, accuracy_level=4,
                                            bits=8)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(inp)), bits=8, block_size=config.block_size,
                                         is_symmetric=True, accuracy_level=4, nodes_to_include=nodes,
                                         algo_config=algo)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), external)
        return {"quantized_matmuls": len(nodes)}
    calibration = config.calibration_settings()
    with or_null(progress).task(f"calibrating on {calibration.source}", total=calibration.samples) as bar:
        feeds = calibration_feeds(src, calibration, shape["layers"], shape["kv_heads"], shape["head_dim"],
                                  bar.advance)
        # ONNX Runtime's MinMax calibrator reduces every tensor to its min and max inside the graph, so
        # each sample adds two scalars per tensor; samples are tokenized only when asked for. (Its
        # CalibMaxIntermediateOutputs option discards collected ranges in 1.31: not used.)
        histogram = config.ranges != "minmax"
        strided = {"CalibStridedMinMax": percentile_stride(calibration.samples)} if histogram else {}
        quantize_static(str(inp), str(out), _reader(feeds, calibration.samples), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes, per_channel=config.per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax if config.ranges == "minmax" else
                        CalibrationMethod.Percentile, use_external_data_format=external,
                        extra_options={"CalibPercentile": config.percentile, **strided,
                                       # int8 inputs, float32 output (MatMulIntegerToFloat): ONNX Runtime's
                                       # QDQ default also requantizes each MatMul's output to uint8 with
                                       # one scale per tensor, the logits included (on SmolLM2, most of
                                       # the KL its static int8 loses)
                                       "OpTypesToExcludeOutputQuantization": ["MatMul"]})
    return facts | {
            "calibration": {"source": calibration.source, "samples": calibration.samples,
                            "sequence_length": calibration.sequence_length},
            "ranges": config.ranges if config.ranges == "minmax" else f"percentile {config.percentile:g}"}


def export(src: Path, out: Path, config: ONNX, device: str = "cpu", progress: Progress | None = None) -> dict:
    """Export the transformers model in ``src`` into ``out``; return facts for the manifest."""
    if device != "cpu":
        raise Unsupported(f"ONNX export here targets ONNX Runtime's CPU provider, not {device}")
    check_model(src)
    ort = require("onnxruntime", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export")
    progress = or_null(progress)
    target = out / MODEL_FILE
    if config.quantization == "float32":
        with progress.task("exporting to ONNX (torch.onnx, dynamo)"):
            facts = float_graph(src, target)
    else:
        staging = out / "float.tmp"
        staging.mkdir()
        try:
            with progress.task("exporting to ONNX (torch.onnx, dynamo)"):
                facts = float_graph(src, staging / MODEL_FILE)
            with progress.task(f"quantizing with ONNX Runtime ({config.quantization})"):
                facts |= quantize(staging / MODEL_FILE, target, config, src, facts, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    copy_tokenizer(src, out)
    facts |= onnx_genai.write(read_config(src), src, out, MODEL_FILE)
    return facts | {"onnxruntime": ort.__version__}


def stored_quantization(path: Path) -> str | None:
    manifest = path / "slipstream.json"
    if manifest.exists():
        return (json.loads(manifest.read_text()).get("technique") or {}).get("quantization")
    return None

