"""The OpenVINO export and engine: at full precision its greedy tokens equal transformers' and its scores
agree; NNCF's int8 and int4 variants export, load and generate; bad NNCF settings are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.engines.loading import open_engine
from slipstream.engines.protocol import Engine, SamplingParams
from tests.quant_checks import distance, prompts

pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytest.importorskip("nncf", reason="the openvino extra is not installed")
pytest.importorskip("onnxscript", reason="the openvino extra is not installed (onnxscript)")

SCORE_ATOL = 1e-4  # float32 log-probabilities, OpenVINO against PyTorch
INT4 = {"quantization": "int4_asym", "group_size": 16, "ratio": 0.8}  # the tiny model's rows are 64 wide


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_llama_dir):
    """The tiny Llama and its OpenVINO float32, int8 and int4 variants, made through ``optimize``. The
    float32 ONNX graph is exported once, by the first, and reused by the others (each export takes ~10 s)."""
    from slipstream.exporters import onnx
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("ov-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    real, kept = onnx.export_float, tmp_path_factory.mktemp("ov-graph") / onnx.MODEL_FILE
    shapes = []

    def export_once(src, path):
        if not shapes:
            shapes.append(real(src, path))
            kept.write_bytes(path.read_bytes())
        path.write_bytes(kept.read_bytes())
        return shapes[0]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx, "export_float", export_once)
        optimize("tiny", "openvino", {"quantization": "float32"}, name="tiny-ov", store=store)
        optimize("tiny", "openvino", {"quantization": "int8_asym"}, name="tiny-ov-int8", store=store)
        optimize("tiny", "openvino", INT4, name="tiny-ov-int4", store=store)
    return store


@pytest.fixture(scope="module")
def engines(store):
    return open_engine("tiny", store=store, threads=1), open_engine("tiny-ov", store=store, threads=1)


def test_implements_the_protocol_in_float32(store, engines):
    _, ov = engines
    assert isinstance(ov, Engine)
    info = ov.info()
    assert info.engine == "openvino" and info.compute_type == "float32"
    assert info.details["inference_precision"] == "f32"  # not the CPU plugin's bf16 default
    assert ov.max_context == 256
    variant = store.get("tiny-ov")
    assert variant.format == "openvino"
    assert (variant.path / "openvino_model.xml").exists() and (variant.path / "tokenizer" / "config.json").exists()
    assert not (variant.path / "onnx.tmp").exists()
    readme = (variant.path / "README.md").read_text()
    assert "**OpenVINO**" in readme and "`past.{i}.key`" in readme and "INFERENCE_PRECISION_HINT" in readme


def test_greedy_tokens_equal_transformers_in_a_padded_batch(engines):
    hf, ov = engines
    ids = prompts(hf)[:2]
    assert len({len(p) for p in ids}) == 2  # rows of different lengths: left padding is exercised
    params = SamplingParams(max_tokens=24)
    a, b = hf.generate(ids, params), ov.generate(ids, params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [c.text for c in a] == [c.text for c in b]
    assert all(len(c.token_ids) > 0 for c in a)
    assert list(ov.stream(ids[1], params)) == a[1].token_ids


def test_interleaved_decodes_keep_their_own_cache(engines):
    _, ov = engines
    ids = prompts(ov)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    alone = [list(ov.stream(p, params)) for p in ids[:2]]
    first, second = ov.stream(ids[0], params), ov.stream(ids[1], params)
    together = [[], []]
    for a, b in zip(first, second):  # one step of each in turn, on the engine's one infer request
        together[0].append(a)
        together[1].append(b)
        ov.score(ids[2:3])  # a scoring pass between steps too
    assert together == alone


def test_scores_agree_with_transformers(engines):
    hf, ov = engines
    ids = prompts(hf)
    for a, b in zip(hf.score(ids), ov.score(ids)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=SCORE_ATOL)
    for fa, fb, p in zip(hf.logprobs(ids[:2]), ov.logprobs(ids[:2]), ids):
        assert fb.shape == (len(p), hf.tokenizer.vocab_size)
        np.testing.assert_allclose(fa, fb, atol=SCORE_ATOL)


def test_sampling_is_seeded(engines):
    _, ov = engines
    ids = prompts(ov)[:2]
    params = SamplingParams(max_tokens=12, temperature=1.5, top_k=50, seed=7)
    first = [c.token_ids for c in ov.generate(ids, params)]
    assert first == [c.token_ids for c in ov.generate(ids, params)]
    assert first != [c.token_ids for c in ov.generate(ids, params.with_(seed=8))]


@pytest.mark.parametrize("name, quantization, types, max_kl", [
    ("tiny-ov-int8", "int8_asym", {"u8"}, 0.02),
    ("tiny-ov-int4", "int4_asym", {"u4", "u8"}, 0.3),
])
def test_compressed_variants_load_and_generate(store, engines, name, quantization, types, max_kl):
    hf, ov = engines
    variant = store.get(name)
    facts = store.manifest(name).extra["facts"]
    assert set(facts["compressed_matrices"]) == types and facts["nncf"]
    assert variant.size_bytes < store.get("tiny-ov").size_bytes
    engine = open_engine(variant, store=store, threads=1)
    assert engine.info().compute_type == quantization
    out = engine.generate(prompts(engine)[:2], SamplingParams(max_tokens=8, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [8, 8]
    kl, top1 = distance(hf, engine)
    assert kl < max_kl and top1 > 0.5, (kl, top1)


def test_engine_options(store):
    from slipstream.errors import InvalidConfig

    engine = open_engine("tiny-ov-int8", store=store, options={"threads": "1", "dynamic_quantization": "0",
                                                              "inference_precision": "f32"})
    assert engine.info().details["dynamic_quantization"] == 0
    with pytest.raises(InvalidConfig, match="inference_precision"):
        open_engine("tiny-ov", store=store, inference_precision="f64")


@pytest.mark.parametrize("options, field", [
    ({"quantization": "int4_asym", "group_size": 100}, "group_size"),
    ({"quantization": "int4_sym", "group_size": 8}, "group_size"),
    ({"quantization": "int4_asym", "ratio": 0.0}, "ratio"),
    ({"quantization": "int4_asym", "ratio": 1.5}, "ratio"),
    ({"quantization": "int8_sym", "ratio": 0.5}, "ratio"),
    ({"quantization": "int3"}, "quantization"),
])
def test_bad_nncf_settings_are_refused_by_name(options, field):
    from slipstream.errors import InvalidConfig
    from slipstream.techniques.registry import make_config

    with pytest.raises(InvalidConfig, match=f"openvino: .*{field}"):
        make_config("openvino", options)


def test_the_cli_refuses_a_bad_group_size_in_one_line(tmp_path):
    from tests.cli.test_cli import slipstream

    proc = slipstream("optimize", "tiny", "-t", "openvino", "-q", "int4_asym", "-o", "group_size=100", home=tmp_path)
    assert proc.returncode != 0
    assert "group_size must be a power of two" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_slugs_name_the_settings():
    from slipstream.exporters.openvino import OpenVINO

    assert OpenVINO(quantization="float32").slug() == "ov-fp32"
    assert OpenVINO().slug() == "ov-int8-asym"
    assert OpenVINO(quantization="int4_sym", group_size=None).slug() == "ov-int4-sym-pc"
    assert OpenVINO(quantization="int4_asym", ratio=0.8).slug() == "ov-int4-asym-g128-r0.8"
