"""bitsandbytes NF4/int8 and fp16/bf16 casts: stored checkpoints the transformers engine reloads."""

from __future__ import annotations

import sys
import warnings

import pytest

from slipstream.engines.loading import open_engine
from slipstream.errors import InvalidConfig, MissingExtra, Unsupported
from slipstream.pipeline import optimize
from slipstream.techniques.quantize.bnb import BitsAndBytes
from slipstream.techniques.quantize.cast import Cast
from slipstream.techniques.registry import make_config
from tests.quant_checks import distance


@pytest.fixture(scope="module")
def qstore(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("bnb-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


@pytest.fixture(scope="module")
def reference(qstore):
    return open_engine("tiny", store=qstore, threads=1)


@pytest.mark.parametrize("dtype,kl_max", [("float16", 1e-4), ("bfloat16", 2e-3)])
def test_cast_halves_the_size_and_computes_in_its_type(qstore, reference, dtype, kl_max):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU without native half precision warns that it is slow
        variant = optimize("tiny", Cast(dtype), store=qstore)
    assert variant.name == f"tiny-{Cast(dtype).slug()}"
    parent = qstore.get("tiny")
    weights = lambda v: sum(f.size for f in qstore.manifest(v.name).files if f.path.endswith(".safetensors"))  # noqa: E731
    assert weights(variant) == pytest.approx(weights(parent) / 2, rel=0.01)
    assert qstore.manifest(variant.name).extra["facts"]["engine_options"] == {"dtype": dtype}
    engine = open_engine(variant, store=qstore, threads=1)
    assert engine.info().compute_type == dtype
    assert {p.dtype for p in engine.model.parameters()} == {getattr(torch, dtype)}
    kl, top1 = distance(reference, engine)
    assert 0 < kl < kl_max and top1 == 1.0


def test_cast_refuses_a_missing_gpu(qstore):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from slipstream.errors import Unsupported

    with pytest.raises(Unsupported, match="torch sees no CUDA device"):
        optimize("tiny", Cast("float16"), name="tiny-cuda-fp16", device="cuda", store=qstore)


bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def bnb_variants(qstore):
    return {q: optimize("tiny", BitsAndBytes(q), store=qstore) for q in ("nf4", "int8")}


def test_bitsandbytes_variants_reload_quantized(qstore, bnb_variants):
    import json

    for q, variant in bnb_variants.items():
        cfg = json.loads((variant.path / "config.json").read_text())["quantization_config"]
        assert cfg["quant_method"] == "bitsandbytes"
        assert cfg["load_in_4bit" if q == "nf4" else "load_in_8bit"] is True
        facts = qstore.manifest(variant.name).extra["facts"]
        assert facts["quantized_linears"] == 14  # 7 per layer; the output head stays float
        engine = open_engine(variant, store=qstore, threads=1)
        kinds = {type(m).__name__ for m in engine.model.modules() if type(m).__module__.startswith("bitsandbytes")}
        assert kinds == ({"Linear4bit"} if q == "nf4" else {"Linear8bitLt"})
        assert type(engine.model.lm_head).__name__ == "Linear"
    sizes = {q: v.size_bytes for q, v in bnb_variants.items()}
    assert sizes["nf4"] < sizes["int8"] < qstore.get("tiny").size_bytes


def test_bitsandbytes_accuracy(qstore, reference, bnb_variants):
    int8 = distance(reference, open_engine(bnb_variants["int8"], store=qstore, threads=1))
    nf4 = distance(reference, open_engine(bnb_variants["nf4"], store=qstore, threads=1))
    assert 1e-5 < int8[0] < 0.01 and int8[1] >= 0.9
    assert int8[0] < nf4[0] < 0.5 and nf4[1] >= 0.25  # 4 bits on a 64-wide random model: far coarser


def test_bitsandbytes_config_and_missing_extra(qstore, monkeypatch):
    with pytest.raises(InvalidConfig, match="apply to 4-bit types only"):
        BitsAndBytes("int8", double_quant=True)
    config = make_config("bitsandbytes", {"quant_type": "nf4", "double_quant": "true"})
    assert config.slug() == "bnb-nf4-dq"
    assert BitsAndBytes("int8").slug() == "bnb-int8"  # slipstream's default outlier threshold, 2
    assert BitsAndBytes("int8").int8_threshold == 2.0
    assert BitsAndBytes("int8", int8_threshold=6.0).slug() == "bnb-int8-t6"  # bitsandbytes' own default
    assert make_config("bitsandbytes", {"quant_type": "int8", "int8_threshold": "3"}).slug() == "bnb-int8-t3"
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(MissingExtra) as err:
        optimize("tiny", BitsAndBytes("nf4"), name="tiny-no-bnb", store=qstore)
    assert "\n" not in str(err.value) and "pip install 'slipstream[bitsandbytes]'" in str(err.value)


def test_float16_is_refused_for_gemma3(store, tiny_gemma3_dir):
    from slipstream.models.intake import import_model

    import_model(str(tiny_gemma3_dir), "gem", store=store)
    with pytest.raises(Unsupported, match="overflow float16.*bfloat16"):
        optimize("gem", Cast("float16"), store=store)
    assert not store.exists("gem-fp16")
