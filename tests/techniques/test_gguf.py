"""GGUF export: float files are exact in llama.cpp, llama.cpp's quantizer makes the smaller types."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from slipstream.engines.loading import open_engine
from slipstream.errors import InvalidConfig, MissingExtra, Unsupported
from slipstream.exporters.gguf import GGUF, tensor_types, write_gguf
from slipstream.pipeline import optimize
from slipstream.techniques.registry import get, make_config
from tests.quant_checks import distance

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama_cpp is not importable: install the "
                                     "'llamacpp' extra (make llamacpp)")


@pytest.fixture(scope="module")
def gguf_store(tmp_path_factory, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("gguf-home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    return store


def test_float_writer_needs_only_gguf(tiny_llama_dir, tmp_path):
    import gguf

    facts = write_gguf(tiny_llama_dir, tmp_path / "m.gguf", "F16")
    assert facts == {"architecture": "llama", "tensors": 21}
    assert tensor_types(tmp_path / "m.gguf") == {"F16": 16, "F32": 5}  # norms stay F32
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    assert arch == "llama"
    assert int(reader.fields["llama.block_count"].parts[-1][0]) == 2


@needs_llama_cpp
@pytest.mark.parametrize("quantization,kl_max,top1_min,types", [
    ("F16", 1e-4, 1.0, {"F16"}),
    ("Q8_0", 0.01, 0.9, {"Q8_0"}),
    # rows of 64 are narrower than a K-quant block (256): llama.cpp falls back to legacy types there
    ("Q5_K_M", 0.1, 0.6, {"Q5_0", "Q5_1", "Q8_0", "Q6_K", "Q5_K"}),
    ("Q4_K_M", 0.2, 0.45, {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q6_K", "Q4_K"}),
])
def test_each_type_loads_on_llama_cpp_and_stays_close(gguf_store, quantization, kl_max, top1_min, types):
    variant = optimize("tiny", GGUF(quantization), store=gguf_store)
    assert variant.name == f"tiny-gguf-{quantization.lower()}" and variant.format == "gguf"
    manifest = gguf_store.manifest(variant.name)
    files = {f.path for f in manifest.files}
    assert files >= {"model.gguf", "tokenizer/tokenizer.json", "tokenizer/config.json"}
    assert not any("tmp" in f for f in files)
    facts = manifest.extra["facts"]
    assert set(facts["tensor_types"]) - {"F32"} <= types and facts["tensor_types"]["F32"] == 5
    assert facts["llama_cpp_python"] and facts["seconds"] > 0
    engine = open_engine(variant, store=gguf_store, threads=1)
    assert engine.info().compute_type == quantization
    kl, top1 = distance(open_engine("tiny", store=gguf_store, threads=1), engine)
    assert kl < kl_max and top1 >= top1_min
    if quantization != "F16":
        assert kl > 1e-5  # really quantized


@needs_llama_cpp
def test_sizes_follow_the_type(gguf_store):
    sizes = {q: optimize("tiny", GGUF(q), name=f"tiny-size-{q}", store=gguf_store).size_bytes
             for q in ("F32", "Q8_0", "Q4_K_M")}
    assert sizes["Q4_K_M"] < sizes["Q8_0"] < sizes["F32"]


def test_config_and_refusals(gguf_store, tmp_path):
    with pytest.raises(InvalidConfig, match="quantization='Q3' is not valid"):
        make_config("gguf", {"quantization": "Q3"})
    assert make_config("gguf", {"quantization": "Q5_K_M"}).slug() == "gguf-q5_k_m"
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(Unsupported, match="GGUF export supports .*; gpt is 'gpt2'"):
        get("gguf").load()(tmp_path / "gpt", tmp_path / "out", GGUF("F32"))


def test_missing_llama_cpp_is_one_line(gguf_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingExtra) as err:
        optimize("tiny", GGUF("Q8_0"), name="tiny-no-llamacpp", store=gguf_store)
    assert "\n" not in str(err.value) and "pip install 'slipstream[llamacpp]'" in str(err.value)
    assert not gguf_store.exists("tiny-no-llamacpp")
    with pytest.raises(MissingExtra, match="the llama.cpp engine"):
        from slipstream.engines.llamacpp import LlamaCppEngine

        LlamaCppEngine(gguf_store.get("tiny").path)


def _sentencepiece_bpe(directory, vocab: int) -> list[str]:
    """A SentencePiece-style BPE tokenizer, as Gemma's: byte fallback, spaces as "▁", BOS first, a
    user-defined run of spaces. Returns the text lines to compare tokenizations on."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from slipstream.evaluation.data import text_set

    # WikiText writes rare words as "<unk>": a special token to transformers, plain text to llama.cpp
    lines = [ln.replace("<unk>", "unk") for ln in text_set("wikitext2").splitlines() if ln.strip()]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(lines[:1500], trainers.BpeTrainer(vocab_size=vocab - 8, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.add_tokens([AddedToken("   ", normalized=False, special=False)])
    fast.save_pretrained(directory)
    return lines[1500:1700] + ["Tabs\tand   three spaces, \u00fcnic\u00f6de \u65e5\u672c and emoji \U0001f642"]


def test_sentencepiece_bpe_survives_gguf_export_and_import(tmp_path, store):
    """Gemma's SentencePiece vocabulary through GGUF and back: llama.cpp's "llama" tokenizer (pieces
    merged by score) and slipstream's import (transformers reads it as Unigram, slipstream rebuilds
    the BPE) both split text exactly as the original tokenizer does."""
    from transformers import AutoTokenizer

    from slipstream.tokenizer import Tokenizer
    from slipstream.models.intake import import_model
    from tests.conftest import build_tiny_gemma3

    src = build_tiny_gemma3(tmp_path / "spm-gemma", layers=6, vocab=1024, tokenizer=False)
    lines = _sentencepiece_bpe(src, 1024)
    write_gguf(src, tmp_path / "model.gguf", "F32")
    imported = import_model(str(tmp_path / "model.gguf"), "spm", store=store)
    original, back = AutoTokenizer.from_pretrained(src), Tokenizer.from_dir(imported.path)
    want = [original(line)["input_ids"] for line in lines]
    assert max(map(len, want)) > 20 and sum(len(w) for w in want) < 0.6 * sum(len(ln) for ln in lines)  # merges used
    assert [back.encode(line) for line in lines] == want
    assert back.decode(want[-1][1:]) == lines[-1]
    if HAS_LLAMA_CPP:
        from llama_cpp import Llama

        llm = Llama(model_path=str(tmp_path / "model.gguf"), vocab_only=True, verbose=False)
        assert [llm.tokenize(line.encode(), add_bos=True, special=False) for line in lines] == want
