"""Calibration samples: exactly ``sequence_length`` tokens each, and with ``bos`` the model's BOS first."""

from __future__ import annotations


def test_samples_start_with_bos_where_the_tokenizer_adds_one(tiny_llama_dir, monkeypatch):
    from slipstream.calibration import Calibration
    from slipstream.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(tiny_llama_dir)
    calibration = Calibration("wikitext2-valid", 3, 32)
    plain = list(calibration.batches(tokenizer))
    assert tokenizer.bos_prefix() == []  # the tiny tokenizer adds none: bos changes nothing
    assert list(calibration.batches(tokenizer, bos=True)) == plain
    monkeypatch.setattr(Tokenizer, "bos_prefix", lambda self: [1])  # as Gemma's does
    with_bos = list(calibration.batches(tokenizer, bos=True))
    assert [len(s) for s in plain] == [len(s) for s in with_bos] == [32, 32, 32]
    assert all(s[0] == 1 and s[1:] == p[:31] for s, p in zip(with_bos, plain))
