"""GGUF variants in llama.cpp itself: its own tokenizer and its text API, with no slipstream code on the
inference path. The reference is the model's Hugging Face tokenizer (transformers' AutoTokenizer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slipstream.exporters.gguf import GGUF, export, write_gguf
from tests.exporters.texts import sentences

llama_cpp = pytest.importorskip("llama_cpp", reason="llama_cpp is not importable: install the 'llamacpp' "
                                "extra (make llamacpp)")

CHAT_TEMPLATE = ("{% for m in messages %}{{ bos_token }}{{ m['role'] }}\n{{ m['content'] }}{{ eos_token }}\n"
                 "{% endfor %}{% if add_generation_prompt %}{{ bos_token }}assistant\n{% endif %}")


def metadata(path: Path) -> dict:
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    return {k: fields[k].contents() for k in fields
            if k.startswith("tokenizer.") and k not in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                                                      "tokenizer.ggml.scores", "tokenizer.ggml.merges")}


def llama_ids(model: Path, lines: list[str]) -> list[list[int]]:
    """llama.cpp's own tokenizer (the vocabulary alone), adding BOS where the file says the model wants it."""
    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    return [llm.tokenize(line.encode(), add_bos=True, special=False) for line in lines]


def hf_ids(directory: Path, lines: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    return [tok(line)["input_ids"] for line in lines]


def with_tokenizer(model_dir: Path, out: Path, pre_tokenizer, ignore_merges: bool = False) -> Path:
    """A copy of the tiny Llama with a byte-level BPE tokenizer trained under ``pre_tokenizer``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from slipstream.evaluation.data import text_set

    shutil.copytree(model_dir, out)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / f).unlink(missing_ok=True)
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text_set("wikitext2").splitlines()[:2000], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            clean_up_tokenization_spaces=False).save_pretrained(out)
    return out


def _pre_tokenizers():
    from tokenizers import Regex, pre_tokenizers as pt

    from slipstream.models import gguf_vocab

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=False)
    return {
        "gpt-2": (pt.ByteLevel(add_prefix_space=False), False),
        "smollm": (pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False)]), False),
        "llama-bpe": (pt.Sequence([pt.Split(Regex(gguf_vocab._LLAMA3_REGEX), "isolated"), byte_level]), True),
        "qwen2": (pt.Sequence([pt.Split(Regex(gguf_vocab._QWEN2_REGEX), "isolated"), byte_level]), False),
    }


@pytest.mark.parametrize("name", ["gpt-2", "smollm", "llama-bpe", "qwen2"])
def test_byte_level_bpe_splits_text_as_llama_cpp_does(tiny_llama_dir, tmp_path, name):
    pre, ignore_merges = _pre_tokenizers()[name]
    src = with_tokenizer(tiny_llama_dir, tmp_path / "model", pre, ignore_merges)
    write_gguf(src, tmp_path / "vocab.gguf", vocab_only=True)
    meta = metadata(tmp_path / "vocab.gguf")
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == name
    lines = sentences()
    want = hf_ids(src, lines)
    assert sum(map(len, want)) < 0.7 * sum(map(len, lines))  # merges are used
    assert llama_ids(tmp_path / "vocab.gguf", lines) == want


def test_an_unknown_pre_tokenizer_is_refused_before_any_work(tiny_llama_dir, tmp_path):
    from tokenizers import pre_tokenizers as pt

    from slipstream.errors import Unsupported

    src = with_tokenizer(tiny_llama_dir, tmp_path / "model",
                         pt.Sequence([pt.Punctuation(), pt.ByteLevel(add_prefix_space=False)]))
    with pytest.raises(Unsupported, match="llama.cpp has no pre-tokenizer that splits text as this tokenizer"):
        export(src, tmp_path / "out", GGUF("F32"))
    assert not (tmp_path / "out" / "model.gguf").exists()


def test_sentencepiece_is_written_as_llama_with_scores(tmp_path):
    from tests.conftest import build_tiny_gemma3
    from tests.techniques.test_gguf import _sentencepiece_bpe

    src = build_tiny_gemma3(tmp_path / "spm", layers=6, vocab=1024, tokenizer=False)
    _sentencepiece_bpe(src, 1024)
    write_gguf(src, tmp_path / "vocab.gguf", vocab_only=True)
    meta = metadata(tmp_path / "vocab.gguf")
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.pre"] == "default"
    assert meta["tokenizer.ggml.add_bos_token"] is True
    lines = sentences()
    assert llama_ids(tmp_path / "vocab.gguf", lines) == hf_ids(src, lines)


@pytest.fixture(scope="module")
def chat_variant(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny Llama with a chat template, exported to an F32 GGUF variant directory."""
    root = tmp_path_factory.mktemp("gguf-chat")
    src = root / "model"
    shutil.copytree(tiny_llama_dir, src)
    config = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": CHAT_TEMPLATE}))
    out = root / "variant"
    out.mkdir()
    export(src, out, GGUF("F32"))
    return out


def test_metadata_names_the_special_tokens_and_the_template(chat_variant, tiny_llama_dir):
    meta = metadata(chat_variant / "model.gguf")
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.ggml.add_bos_token"] is False  # the tokenizer adds none
    assert meta["tokenizer.chat_template"] == CHAT_TEMPLATE
    lines = sentences()
    assert llama_ids(chat_variant / "model.gguf", lines) == hf_ids(tiny_llama_dir, lines)


def _slipstream_greedy(variant: Path, ids: list[int], max_tokens: int):
    from slipstream.engines.llamacpp import LlamaCppEngine
    from slipstream.engines.protocol import SamplingParams

    engine = LlamaCppEngine(variant, threads=1)
    return engine.generate([ids], SamplingParams(max_tokens=max_tokens))[0]


def _as_llama_cpp_text(text: str) -> str:
    # a random model emits byte pieces that are not whole UTF-8 characters: transformers decodes them as
    # U+FFFD, llama-cpp-python drops them
    return text.replace("\ufffd", "")


def _llama_greedy(llm, ids: list[int], max_tokens: int) -> list[int]:
    """llama-cpp-python's own generation loop on token ids, greedy, stopping at end of sequence."""
    out = []
    for token in llm.generate(ids, temp=0.0, reset=True):
        if token == llm.token_eos() or len(out) == max_tokens:
            break
        out.append(token)
    return out


def test_text_completion_equals_slipstreams_engine(chat_variant):
    from transformers import AutoTokenizer

    llm = llama_cpp.Llama(model_path=str(chat_variant / "model.gguf"), n_ctx=256, n_threads=1, verbose=False)
    tok = AutoTokenizer.from_pretrained(chat_variant / "tokenizer")
    for prompt in ("The game was", "In 1990 the band released", "Robert Boulter is an English"):
        out = llm.create_completion(prompt, max_tokens=16, temperature=0.0)
        ours = _slipstream_greedy(chat_variant, tok(prompt)["input_ids"], 16)
        assert out["choices"][0]["text"] == _as_llama_cpp_text(ours.text)
        assert out["usage"]["completion_tokens"] == len(ours.token_ids) > 0
        assert _llama_greedy(llm, llm.tokenize(prompt.encode()), 16) == ours.token_ids


def test_chat_completion_uses_the_embedded_template(chat_variant):
    from slipstream.tokenizer import Tokenizer

    llm = llama_cpp.Llama(model_path=str(chat_variant / "model.gguf"), n_ctx=256, n_threads=1, verbose=False)
    messages = [{"role": "user", "content": "Name a river in France."}]
    out = llm.create_chat_completion(messages, max_tokens=16, temperature=0.0)
    ids = Tokenizer.from_dir(chat_variant / "tokenizer").chat(messages)
    ours = _slipstream_greedy(chat_variant, ids, 16)
    assert out["usage"]["prompt_tokens"] == len(ids)
    assert out["choices"][0]["message"]["content"] == _as_llama_cpp_text(ours.text)
    assert out["usage"]["completion_tokens"] == len(ours.token_ids) > 0
