"""ONNX export: float32 is exact, dynamic and static int8 stay close, static int8 calibrates."""

from __future__ import annotations

import json
import sys

import pytest

from slipstream.engines.loading import open_engine
from slipstream.errors import InvalidConfig, MissingExtra, Unsupported
from slipstream.exporters.onnx import ONNX
from slipstream.machine import has_int8_dot_product
from slipstream.pipeline import optimize
from slipstream.techniques.registry import config_from_dict, get, make_config
from tests.quant_checks import distance

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def onnx_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("onnx-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


def op_counts(path) -> dict[str, int]:
    """Operators by type in a variant directory's model.onnx, or in an .onnx file."""
    import collections

    import onnx

    model = onnx.load(str(path / "model.onnx" if path.is_dir() else path))
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.fixture(scope="module")
def reference(onnx_store):
    return open_engine("tiny", store=onnx_store, threads=1)


def test_dynamic_int8_is_smaller_and_close(onnx_store, reference):
    variant = optimize("tiny", ONNX("int8_dynamic"), store=onnx_store)
    assert variant.name == "tiny-onnx-int8-dynamic" and variant.format == "onnx"
    manifest = onnx_store.manifest(variant.name)
    files = {f.path for f in manifest.files}
    assert {"model.onnx", "tokenizer/tokenizer.json", "tokenizer/config.json"} <= files
    assert not any(f.endswith(".tmp") or "float.tmp" in f for f in files)
    facts = manifest.extra["facts"]
    assert facts["layers"] == 2 and facts["seconds"] > 0 and facts["peak_rss_bytes"] > 0
    # 16 outlier channels per input (the default) found on the calibration text stay float
    assert facts["outlier_channels"]["per_input"] == 16 and facts["outlier_channels"]["calibration"]["samples"] == 32
    parent = onnx_store.get("tiny").size_bytes
    assert variant.size_bytes < 0.75 * parent  # int8 matrices; embeddings and norms stay float
    engine = open_engine(variant, store=onnx_store, threads=1)
    assert engine.info().compute_type == "int8_dynamic"
    kl, top1 = distance(reference, engine)
    assert 1e-5 < kl < 0.02 and top1 >= 0.8
    assert facts["reduce_range"] is (not has_int8_dot_product()) and facts["activations"] == "per_token"
    ops = op_counts(variant.path)
    assert ops["MatMulInteger"] == 15  # 7 per layer and the head
    # one per-token scale per distinct input: q/k/v share one, gate/up one, o_proj, down_proj; the head
    assert ops["ReduceMax"] == 2 * 4 + 1 and "DynamicQuantizeLinear" not in ops
    assert ops["MatMul"] == 5 + 15  # 5 between activations, left in float; a float outlier product per weight


def test_the_float_graph_is_exported_once_per_model_and_copied(tmp_path, tiny_llama_dir):
    import hashlib

    from slipstream.models.intake import import_model
    from slipstream.store import Store

    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    store = Store(tmp_path / "home")
    import_model(str(tiny_llama_dir), "tiny", store=store)
    plain = optimize("tiny", ONNX("float32"), store=store)
    (kept,) = (store.home / "cache" / "onnx-float").iterdir()
    assert store.manifest(plain.name).extra["facts"]["float_graph"] == "exported"
    assert sha(kept / "model.onnx") == sha(plain.path / "model.onnx")
    before = sha(kept / "model.onnx")
    # outlier channels rewrite the graph they are given: a copy, so the kept one stays as exported
    split = optimize("tiny", ONNX("int8_dynamic", outlier_channels=2, samples=2, sequence_length=32), store=store)
    facts = store.manifest(split.name).extra["facts"]
    assert facts["float_graph"] == "read" and facts["outlier_channels"]["per_input"] == 2
    assert sha(kept / "model.onnx") == before and len(list(kept.parent.iterdir())) == 1
    assert not list(split.path.glob("*.tmp"))


def test_per_tensor_activations_are_onnx_runtimes_own(onnx_store, reference):
    variant = optimize("tiny", ONNX("int8_dynamic", activations="per_tensor"), store=onnx_store)
    assert variant.name == "tiny-onnx-int8-dynamic-act-pertensor"
    assert onnx_store.manifest(variant.name).extra["facts"]["activations"] == "per_tensor"
    ops = op_counts(variant.path)
    assert ops["MatMulInteger"] == 15 and ops["DynamicQuantizeLinear"] > 0 and "ReduceMax" not in ops
    kl, top1 = distance(reference, open_engine(variant, store=onnx_store, threads=1))
    assert 1e-5 < kl < 0.05 and top1 >= 0.7
    with pytest.raises(InvalidConfig, match="applies to int8_dynamic only"):
        ONNX("int8_static", activations="per_tensor")


def one_matmul(path, w):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "rows", n])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))


@pytest.mark.parametrize("reduce_range", [False, True])
def test_an_outlier_token_does_not_coarsen_the_others(tmp_path, reduce_range):
    # One token with activations 500x the rest (as a Llama's first token has): with one scale per tensor
    # every other token is quantized in steps set by it; with one per token they keep their precision.
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from slipstream.exporters.onnx_per_token import quantize_per_token

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 48)) * 0.1).astype(np.float32)
    x = rng.standard_normal((1, 9, 64)).astype(np.float32)
    x[0, 0] *= 500
    one_matmul(tmp_path / "f.onnx", w)
    assert quantize_per_token(tmp_path / "f.onnx", tmp_path / "t.onnx", ["mm"], per_channel=True,
                              reduce_range=reduce_range) == 1
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "d.onnx"), per_channel=True,
                     reduce_range=reduce_range, weight_type=QuantType.QInt8)

    def error(name):
        y = ort.InferenceSession(str(tmp_path / name)).run(None, {"x": x})[0]
        exact = x @ w
        return np.abs(y - exact)[0, 1:].max() / np.abs(exact[0, 1:]).max(), np.abs(y - exact)[0, 0].max() / np.abs(exact[0, 0]).max()

    (token_rest, token_outlier), (tensor_rest, _) = error("t.onnx"), error("d.onnx")
    assert token_rest < (0.04 if reduce_range else 0.02) and token_outlier < 0.04
    assert tensor_rest > 10 * token_rest
    ops = op_counts(tmp_path / "t.onnx")
    assert ops["MatMulInteger"] == 1 and "MatMul" not in ops


@pytest.mark.parametrize("quantizer", ["per_token", "static"])
def test_outlier_channels_split_out_keep_the_rest_precise(tmp_path, quantizer):
    # Two input channels carry values 300x the others in every token (as a Llama's massive activations
    # do): one scale per token, or one per tensor, then gives the other channels a few levels at most.
    # Split out into a float product, they no longer set the scale, and the split graph is exact.
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from slipstream.exporters.onnx import _reader
    from slipstream.exporters.onnx_outliers import channel_maxima, matmul_inputs, outlier_channels, split_outliers
    from slipstream.exporters.onnx_per_token import quantize_per_token

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 48)) * 0.1).astype(np.float32)

    def sample(n):
        x = rng.standard_normal((1, n, 64)).astype(np.float32)
        x[..., [5, 40]] *= 300
        return x

    one_matmul(tmp_path / "f.onnx", w)
    groups = matmul_inputs(tmp_path / "f.onnx", ["mm"])
    assert groups == {"x": ["mm"]}
    maxima = channel_maxima(tmp_path / "f.onnx", ["x"], ({"x": sample(16)} for _ in range(3)))
    assert maxima["x"].shape == (64,)
    channels = outlier_channels(maxima["x"], 2)
    assert channels.tolist() == [5, 40]
    assert split_outliers(tmp_path / "f.onnx", tmp_path / "s.onnx", groups, {"x": channels}) == 2
    x = sample(9)
    exact = x @ w
    split = ort.InferenceSession(str(tmp_path / "s.onnx")).run(None, {"x": x})[0]
    assert np.allclose(split, exact, rtol=1e-5, atol=1e-4)  # still float: the same product
    assert op_counts(tmp_path / "s.onnx") == {"Gather": 1, "Mul": 1, "MatMul": 2, "Add": 1}

    def quantized(src, dst):
        if quantizer == "per_token":
            quantize_per_token(src, dst, ["mm"], per_channel=True, reduce_range=False)
        else:
            quantize_static(str(src), str(dst), _reader(iter([{"x": sample(16)} for _ in range(4)])),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"], nodes_to_quantize=["mm"],
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        y = ort.InferenceSession(str(dst)).run(None, {"x": x})[0]
        return np.abs(y - exact).max() / np.abs(exact).max()

    plain, with_split = quantized(tmp_path / "f.onnx", tmp_path / "q.onnx"), quantized(tmp_path / "s.onnx", tmp_path / "qs.onnx")
    assert with_split < 0.02 and plain > 3 * with_split


def test_outlier_channels_in_a_variant(onnx_store, reference):
    config = ONNX("int8_dynamic", outlier_channels=4, samples=2, sequence_length=32)
    variant = optimize("tiny", config, store=onnx_store)
    assert variant.name == "tiny-onnx-int8-dynamic-oc4"
    facts = onnx_store.manifest(variant.name).extra["facts"]
    assert facts["outlier_channels"]["per_input"] == 4 and facts["outlier_channels"]["inputs"] == 9
    assert facts["outlier_channels"]["total"] == 36 and facts["outlier_channels"]["calibration"]["samples"] == 2
    ops = op_counts(variant.path)
    # every quantized product keeps its int8 MatMul and gains a 4-row float one; a Gather per input
    assert ops["MatMulInteger"] == 15 and ops["MatMul"] == 5 + 15 and ops["Gather"] >= 9
    kl, top1 = distance(reference, open_engine(variant, store=onnx_store, threads=1))
    assert 1e-6 < kl < 0.02 and top1 >= 0.8
    static = optimize("tiny", ONNX("int8_static", outlier_channels=4, samples=2, sequence_length=32), store=onnx_store)
    assert static.name == "tiny-onnx-int8-static-oc4"
    kl, top1 = distance(reference, open_engine(static, store=onnx_store, threads=1))
    assert 1e-6 < kl < 0.1 and top1 >= 0.6
    for bad in (ONNX("int8_blockwise").to_dict() | {"outlier_channels": 4}, {"outlier_channels": -1}):
        with pytest.raises(InvalidConfig, match="outlier_channels"):
            make_config("onnx", bad)


def test_weights_are_symmetric_per_column():
    import numpy as np

    from slipstream.exporters.onnx_per_token import quantize_weight

    w = np.array([[0.5, -2.0, 0.0], [-1.0, 1.0, 0.0]], np.float32)
    q, scale = quantize_weight(w, per_channel=True, reduce_range=False)
    assert q.dtype == np.int8 and q[:, 0].tolist() == [64, -127] and q[:, 1].tolist() == [-127, 64]
    assert q[:, 2].tolist() == [0, 0] and np.all(np.isfinite(scale))  # an all-zero column stays zero
    assert np.allclose(q * scale, w, atol=1.0 / 127)
    q7, _ = quantize_weight(w, per_channel=False, reduce_range=True)
    assert np.abs(q7).max() == 63 and q7[0, 1] == -63


def test_keep_float_leaves_the_named_modules_in_float(onnx_store, reference):
    # The tiny model's head is tied to its embeddings: "lm_head" still names the head's MatMul.
    config = ONNX("int8_dynamic", keep_float=("down_proj", "lm_head"))
    variant = optimize("tiny", config, store=onnx_store)
    assert variant.name == "tiny-onnx-int8-dynamic-keep-down_proj-keep-lm_head"
    facts = onnx_store.manifest(variant.name).extra["facts"]
    assert facts["float_matmuls"] == 3 and facts["quantized_matmuls"] == 12  # 2 down projections, head
    ops = op_counts(variant.path)
    assert ops["MatMulInteger"] == 12 and ops["MatMul"] == 5 + 3 + 12
    import onnx

    stored = onnx.load(str(variant.path / "model.onnx")).graph.initializer
    assert not any(i.name.endswith(".transposed") for i in stored)  # the float head reads the embedding
    kl, _ = distance(reference, open_engine(variant, store=onnx_store, threads=1))
    if not onnx_store.exists("tiny-onnx-int8-dynamic"):
        optimize("tiny", ONNX("int8_dynamic"), store=onnx_store)
    plain, _ = distance(reference, open_engine("tiny-onnx-int8-dynamic", store=onnx_store, threads=1))
    assert 0 < kl < plain  # fewer matrices quantized, less error

    one = optimize("tiny", ONNX("int8_dynamic", keep_float=("layers.1.mlp.down_proj",)), store=onnx_store)
    assert onnx_store.manifest(one.name).extra["facts"]["float_matmuls"] == 1


def test_keep_float_errors_name_the_modules(onnx_store):
    with pytest.raises(InvalidConfig, match="names no weight of this model.*down_proj.*up_proj"):
        optimize("tiny", ONNX("int8_dynamic", keep_float=("ffn_down",)), store=onnx_store)
    with pytest.raises(InvalidConfig, match="int8_dynamic and int8_static only"):
        ONNX("int8_blockwise", keep_float=("down_proj",))


@pytest.mark.skipif(has_int8_dot_product(), reason="this CPU has VNNI: its int8 kernels do not saturate")
def test_full_range_int8_saturates_without_vnni(onnx_store, reference):
    # uint8 x int8 pairs summed in 16 bits overflow with 8-bit weights; 7-bit weights (the default
    # here) keep the sums in range, so the default variant is several times closer
    full = open_engine(optimize("tiny", ONNX("int8_dynamic", reduce_range=False), store=onnx_store),
                       store=onnx_store, threads=1)
    auto = open_engine("tiny-onnx-int8-dynamic", store=onnx_store, threads=1)
    assert distance(reference, auto)[0] < 0.25 * distance(reference, full)[0]


def test_static_int8_calibrates_and_stays_close(onnx_store, reference):
    config = ONNX("int8_static", samples=4, sequence_length=64)
    variant = optimize("tiny", config, store=onnx_store)
    facts = onnx_store.manifest(variant.name).extra["facts"]
    assert facts["calibration"] == {"source": "wikitext2-valid", "samples": 4, "sequence_length": 64}
    engine = open_engine(variant, store=onnx_store, threads=1)
    assert engine.info().compute_type == "int8_static"
    kl, top1 = distance(reference, engine)
    assert 1e-5 < kl < 0.1 and top1 >= 0.6
    ops = op_counts(variant.path)
    assert ops["QuantizeLinear"] > 0 and "DynamicQuantizeLinear" not in ops  # activations use fixed ranges
    # int8 inputs, float32 outputs: no MatMul's output (the logits least of all) is requantized to uint8
    import onnx

    graph = onnx.load(str(variant.path / "model.onnx")).graph
    matmul_outputs = {o for n in graph.node if n.op_type == "MatMul" for o in n.output}
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert not quantized & matmul_outputs
    # one activation range per distinct weight-MatMul input: 2 layers x (o, gate/up), and the head; the
    # down projections and q/k/v stay float32 by default (static int8's keep_float)
    assert len(quantized) == 2 * 2 + 1 and facts["float_matmuls"] == 2 * 4


def test_static_percentile_ranges_clip_what_minmax_keeps(onnx_store):
    """Percentile ranges come from the same calibration and are never wider than min/max ranges."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    def activation_scales(variant) -> dict[str, float]:
        model = onnx.load(str(variant.path / "model.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        weights = {i for n in model.graph.node if n.op_type == "DequantizeLinear" for i in n.input[:1] if i in inits
                   and inits[i].dtype == np.int8}
        return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in weights and inits[n.input[1]].size == 1}

    # no outlier channels split out, so that the inputs keep the rare large values percentiles clip
    cal = dict(samples=4, sequence_length=64, outlier_channels=0)
    minmax = optimize("tiny", ONNX("int8_static", **cal), store=onnx_store)
    pct = optimize("tiny", ONNX("int8_static", ranges="percentile", percentile=99.9, **cal), store=onnx_store)
    assert pct.name == "tiny-onnx-int8-static-p99.9-oc0"
    assert onnx_store.manifest(pct.name).extra["facts"]["ranges"] == "percentile 99.9"
    a, b = activation_scales(minmax), activation_scales(pct)
    assert a.keys() == b.keys() and len(a) == 5  # 2 layers x (o, gate/up) quantized inputs, and the head
    assert all(b[k] <= a[k] * (1 + 1e-6) for k in a) and sum(b[k] < 0.9 * a[k] for k in a) >= len(a) // 2
    with pytest.raises(InvalidConfig, match="applies to int8_static only"):
        ONNX("int8_dynamic", ranges="percentile")
    assert ONNX("int8_static", keep_float=("down_proj", "q_proj", "k_proj", "v_proj")) == ONNX("int8_static")
    assert ONNX("int8_static", keep_float=("down_proj",)).slug() == "onnx-int8-static-keep-down_proj"
    assert ONNX("int8_dynamic").keep_float == ()
    assert ONNX("int8_static", keep_float=()).slug() == "onnx-int8-static-keep-none"
    assert make_config("onnx", {"quantization": "int8_static", "keep_float": ""}) == ONNX("int8_static", keep_float=())
    with pytest.raises(InvalidConfig, match="percentile must be in"):
        ONNX("int8_static", ranges="percentile", percentile=100.0)


def test_histogram_calibration_streams_in_chunks():
    from slipstream.exporters.onnx import _reader, percentile_stride

    assert [percentile_stride(n) for n in (32, 6, 5, 1)] == [4, 3, 1, 1]
    pulled = []

    def feeds():
        for i in range(6):
            pulled.append(i)
            yield {"x": i}

    reader = _reader(feeds(), 6)
    assert len(reader) == 6
    chunks = []
    for start in range(0, 6, 3):  # as ONNX Runtime's CalibStridedMinMax calls it
        reader.set_range(start_index=start, end_index=start + 3)
        chunk = []
        while (item := reader.get_next()) is not None:
            chunk.append(item["x"])
        chunks.append((chunk, len(pulled)))
    assert chunks == [([0, 1, 2], 3), ([3, 4, 5], 6)]  # each chunk read only when asked for


def test_blockwise_int8_is_close(onnx_store, reference):
    variant = optimize("tiny", ONNX("int8_blockwise"), store=onnx_store)
    assert variant.name == "tiny-onnx-int8-blockwise"
    ops = op_counts(variant.path)
    assert ops["MatMulNBits"] == 15 and ops["MatMul"] == 2 * 2 + 1  # per layer Q K^T, scores V; rotary
    engine = open_engine(variant, store=onnx_store, threads=1)
    kl, top1 = distance(reference, engine)
    assert 1e-6 < kl < 0.005 and top1 >= 0.9


def test_config_is_typed_and_calibration_checked():
    assert get("onnx").needs_calibration and get("onnx").extra == "onnx"
    with pytest.raises(InvalidConfig, match="quantization='int4' is not valid"):
        make_config("onnx", {"quantization": "int4"})
    with pytest.raises(InvalidConfig, match="is evaluation text"):
        make_config("onnx", {"quantization": "int8_static", "calibration": "wikitext2"})
    with pytest.raises(InvalidConfig, match="block_size must be a power of two"):
        ONNX("int8_blockwise", block_size=48)
    with pytest.raises(InvalidConfig, match="samples >= 1"):
        ONNX("int8_static", samples=0)
    config = make_config("onnx", {"quantization": "int8_static", "samples": "8"})
    assert config == ONNX("int8_static", samples=8) and config.slug() == "onnx-int8-static"
    assert json.loads(json.dumps(config.to_dict()))["quantization"] == "int8_static"
    # lists from JSON (manifests, recipes) become the tuples a frozen config holds: equal and hashable
    kept = make_config("onnx", {"keep_float": ["down_proj", "lm_head"]})
    assert kept == ONNX(keep_float=("down_proj", "lm_head")) and hash(kept) == hash(ONNX(keep_float=("down_proj", "lm_head")))
    assert config_from_dict(json.loads(json.dumps(kept.to_dict()))) == kept


def test_unsupported_architecture_and_device(onnx_store, tmp_path):
    with pytest.raises(Unsupported, match="ONNX export here targets ONNX Runtime's CPU provider"):
        get("onnx").load()(onnx_store.get("tiny").path, tmp_path, ONNX("float32"), device="cuda")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(Unsupported, match="ONNX export supports .* decoders; gpt is 'gpt2'"):
        get("onnx").load()(tmp_path / "gpt", tmp_path / "out", ONNX("float32"))


def test_missing_extra_is_one_line(onnx_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails as if not installed
    with pytest.raises(MissingExtra) as err:
        optimize("tiny", ONNX("float32"), store=onnx_store)
    message = str(err.value)
    assert "\n" not in message and "pip install 'slipstream[onnx]'" in message
    assert not onnx_store.exists("tiny-onnx-fp32")
