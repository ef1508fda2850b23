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
from slipstream.techniques.registry import get, make_config
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
    import collections

    import onnx

    model = onnx.load(str(path / "model.onnx"))
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
    assert "calibration" not in facts
    parent = onnx_store.get("tiny").size_bytes
    assert variant.size_bytes < 0.75 * parent  # int8 matrices; embeddings and norms stay float
    engine = open_engine(variant, store=onnx_store, threads=1)
    assert engine.info().compute_type == "int8_dynamic"
    kl, top1 = distance(reference, engine)
    assert 1e-5 < kl < 0.02 and top1 >= 0.8
    assert facts["reduce_range"] is (not has_int8_dot_product())
    ops = op_counts(variant.path)
    assert ops["MatMulInteger"] == 15 and ops["DynamicQuantizeLinear"] > 0  # 7 per layer and the head
    assert ops["MatMul"] == 5  # between activations: left in float


def test_keep_float_leaves_the_named_modules_in_float(onnx_store, reference):
    # The tiny model's head is tied to its embeddings: "lm_head" still names the head's MatMul.
    config = ONNX("int8_dynamic", keep_float=("down_proj", "lm_head"))
    variant = optimize("tiny", config, store=onnx_store)
    assert variant.name == "tiny-onnx-int8-dynamic-keep-down_proj-keep-lm_head"
    facts = onnx_store.manifest(variant.name).extra["facts"]
    assert facts["float_matmuls"] == 3 and facts["quantized_matmuls"] == 12  # 2 down projections, head
    ops = op_counts(variant.path)
    assert ops["MatMulInteger"] == 12 and ops["MatMul"] == 5 + 3
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
    with pytest.raises(InvalidConfig, match="down_proj.*up_proj|names no weight MatMul"):
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
