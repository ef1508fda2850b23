"""Tiny random encoder-decoder models built from a config: a T5 and a Marian, each with a small BPE tokenizer
trained on WikiText-2 and saved as tokenizer.json (no sentencepiece needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_VOCAB


def _train_tokenizer(directory: Path, specials: list[str], last: str | None, **named: str) -> None:
    """A byte-level BPE whose encodings end with ``</s>`` (as T5's and Marian's do); ``last``: a special token
    given the highest id (Marian keeps ``<pad>`` there)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from slipstream.evaluation.data import text_set

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    size = TINY_VOCAB - (1 if last else 0)
    tok.train_from_iterator(text_set("wikitext2").splitlines()[:2000],
                            trainers.BpeTrainer(vocab_size=size, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if last:
        tok.add_special_tokens([last])
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    PreTrainedTokenizerFast(tokenizer_object=tok, **named).save_pretrained(directory)


def build_tiny_t5(directory: Path, seed: int = 0) -> Path:
    """A tiny random T5 (gated-GELU feed-forward as in T5 v1.1 and Flan-T5, tied embeddings): pad 0 is
    the decoder's start token, ``</s>`` 1 ends a sequence."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(directory, ["<pad>", "</s>", "<unk>"], None, pad_token="<pad>", eos_token="</s>",
                     unk_token="<unk>")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=TINY_VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                      num_heads=4, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0, tie_word_embeddings=True, n_positions=256,
                      initializer_factor=4.0)  # peaky logits, so greedy choices are not near-ties
    model = T5ForConditionalGeneration(config)
    model.generation_config.eos_token_id = 1
    model.save_pretrained(directory)
    return directory


def build_tiny_marian(directory: Path, seed: int = 0) -> Path:
    """A tiny random Marian (post-norm, sinusoidal positions, shared embeddings): ``</s>`` 0 ends a sequence
    and ``<pad>``, the last id, starts the decoder, as in the OPUS-MT models."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    directory.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(directory, ["</s>", "<unk>"], "<pad>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    pad = TINY_VOCAB - 1
    config = MarianConfig(vocab_size=TINY_VOCAB, d_model=64, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                          decoder_ffn_dim=128, max_position_embeddings=256, pad_token_id=pad, eos_token_id=0,
                          decoder_start_token_id=pad, forced_eos_token_id=0, scale_embedding=True,
                          init_std=0.2)  # peaky logits, so greedy choices are not near-ties
    model = MarianMTModel(config)
    model.generation_config.eos_token_id = 0
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5") / "model")


@pytest.fixture(scope="session")
def tiny_marian_dir(tmp_path_factory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("tiny-marian") / "model")
