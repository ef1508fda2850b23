"""CTranslate2 export: every quantization type, device checks, manifests."""

from __future__ import annotations

import json

import numpy as np

import pytest

from slipstream.errors import InvalidConfig, Unsupported
from slipstream.exporters.ctranslate2 import QUANTIZATIONS, CTranslate2, supported_types
from slipstream.pipeline import optimize
from slipstream.techniques.registry import make_config

ctranslate2 = pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("ct2-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_every_quantization_is_made_or_refused_clearly(tiny_store, quantization):
    runnable = quantization in supported_types("cpu")
    name = f"tiny-{quantization}"
    if not runnable:
        hint = "MKL backend" if quantization == "int16" else "need a CUDA GPU"  # what would run it
        with pytest.raises(Unsupported, match=f"'{quantization}' cannot run on cpu here.*supported:.*{hint}"):
            optimize("tiny", "ctranslate2", {"quantization": quantization}, name=name, device="cpu",
                     store=tiny_store)
        assert not tiny_store.exists(name)
        return
    variant = optimize("tiny", "ctranslate2", {"quantization": quantization}, name=name, device="cpu",
                       store=tiny_store)
    manifest = tiny_store.manifest(name)
    assert manifest.parent == "tiny" and manifest.format == "ctranslate2"
    assert manifest.technique == {"technique": "ctranslate2", "quantization": quantization}
    assert manifest.library_versions["ctranslate2"] == ctranslate2.__version__
    files = {f.path for f in manifest.files}
    assert {"model.bin", "config.json", "tokenizer/tokenizer.json", "tokenizer/config.json"} <= files
    assert manifest.size_bytes == sum(f.size for f in manifest.files) == variant.size_bytes
    assert manifest.extra["facts"]["seconds"] > 0

    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams

    engine = open_engine(variant, store=tiny_store, threads=1)
    out = engine.generate([engine.tokenizer.encode("The game")], SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(out[0].token_ids) == 4


def test_sizes_follow_the_weight_type(tiny_store):
    kinds = [q for q in ("float32", "int16", "int8") if q in supported_types("cpu")]  # no int16 on oneDNN (AMD)
    sizes = {q: optimize("tiny", CTranslate2(quantization=q), name=f"tiny-size-{q}", store=tiny_store).size_bytes
             for q in kinds}
    assert sorted(kinds, key=sizes.get) == [q for q in ("int8", "int16", "float32") if q in kinds]
    assert sizes["int8"] < 0.4 * sizes["float32"]


def test_cuda_target_without_gpu_uses_the_cuda_table(tiny_store):
    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("a GPU is present")
    assert "float16" in supported_types("cuda") and "int16" not in supported_types("cuda")


def test_config_is_typed():
    with pytest.raises(InvalidConfig, match="quantization='int4' is not valid"):
        make_config("ctranslate2", {"quantization": "int4"})
    with pytest.raises(InvalidConfig, match="has no option 'bits'"):
        make_config("ctranslate2", {"bits": "8"})
    config = make_config("ctranslate2", {"quantization": "int8_float32"})
    assert config == CTranslate2("int8_float32") and config.slug() == "ct2-int8_float32"
    assert json.loads(json.dumps(config.to_dict())) == {"technique": "ctranslate2", "quantization": "int8_float32"}


def test_engine_refuses_a_type_the_device_cannot_compute(tiny_store, tmp_path):
    from slipstream.exporters.ctranslate2 import check_runnable

    variant = tiny_store.get("tiny-int8") if tiny_store.exists("tiny-int8") else optimize(
        "tiny", "ctranslate2", {"quantization": "int8"}, name="tiny-int8", store=tiny_store)
    check_runnable(variant.path, "cpu")  # fine
    manifest = json.loads((variant.path / "slipstream.json").read_text())
    missing = [q for q in QUANTIZATIONS if q not in supported_types("cpu")]
    if not missing:
        pytest.skip("this CPU computes every CTranslate2 type")
    manifest["technique"]["quantization"] = missing[0]
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "slipstream.json").write_text(json.dumps(manifest))
    with pytest.raises(Unsupported, match="cannot run on cpu"):
        check_runnable(fake, "cpu")


def test_pipeline_refuses_wrong_input_format(tiny_store):
    if not tiny_store.exists("tiny-int8"):
        optimize("tiny", "ctranslate2", {"quantization": "int8"}, name="tiny-int8", store=tiny_store)
    with pytest.raises(Unsupported, match="takes a hf model"):
        optimize("tiny-int8", "ctranslate2", {"quantization": "int8"}, store=tiny_store)


def test_gemma3_converts_and_scoring_past_its_window_is_refused_clearly(store, tiny_gemma3_dir):
    """CTranslate2 converts Gemma 3 and generates past its sliding window, but its forward_batch cannot
    score more tokens than the window at once: a one-line error names the window to evaluate with."""
    pytest.importorskip("ctranslate2")
    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.models.intake import import_model

    import_model(str(tiny_gemma3_dir), "gem", store=store)
    optimize("gem", "ctranslate2", {"quantization": "float32"}, store=store)
    ct2 = open_engine("gem-ct2-float32", store=store, threads=1)
    hf = open_engine("gem", store=store, threads=1)
    ids = ct2.tokenizer.encode("The game was released in Japan in 2011 and sold well in its first week. " * 4)[:100]
    assert len(ids) == 100  # the tiny model's window is 64 tokens
    inside = ids[:64]
    np.testing.assert_allclose(ct2.logprobs([inside])[0], hf.logprobs([inside])[0], atol=1e-3)
    assert len(ct2.generate([ids], SamplingParams(max_tokens=4))[0].token_ids) == 4
    with pytest.raises(Unsupported, match=r"cannot score \d+ tokens at once .* evaluate with --window 64 or less"):
        ct2.logprobs([ids])
