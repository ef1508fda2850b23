"""Sliding-window perplexity and KL, through the Engine protocol, with caching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slipstream.evaluation.perplexity import DivergenceAccumulator, NLLAccumulator, plan_windows
from slipstream.evaluation.run import EvalSettings, evaluate, evaluate_many


@pytest.mark.parametrize("n,window,stride", [(10, 4, 2), (1000, 128, 64), (1000, 128, 128), (129, 128, 64),
                                             (5, 1024, 512)])
def test_windows_score_every_token_but_the_first_once(n, window, stride):
    windows = plan_windows(n, window, stride)
    scored = []
    for w in windows:
        assert w.end - w.begin <= window and 0 < w.scored < w.end - w.begin + 1
        scored.extend(range(w.end - w.scored, w.end))
    assert scored == list(range(1, n))


def test_accumulators_against_hand_computation():
    nll = NLLAccumulator()
    nll.add(np.log([0.5, 0.25]))
    nll.add(np.log([0.125]))
    r = nll.result()
    assert r["tokens"] == 3
    assert math.isclose(r["perplexity"], math.exp((math.log(2) + math.log(4) + math.log(8)) / 3))
    assert r["perplexity_ci95"][0] < r["perplexity"] < r["perplexity_ci95"][1]
    p = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    q = np.log(np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]))
    div = DivergenceAccumulator()
    div.add(p, q)
    d = div.result()
    expected = (0.7 * math.log(0.7 / 0.6) + 0.2 * math.log(0.2 / 0.3)) / 2
    assert math.isclose(d["kl_mean"], expected, rel_tol=1e-9) and d["top1_agreement"] == 1.0


SETTINGS = EvalSettings(window=128, stride=64, max_tokens=1536, threads=1)


def test_engines_agree_and_kl_is_zero_at_full_precision(session_store):
    pytest.importorskip("ctranslate2")
    report = evaluate("tiny-ct2-float32", reference="tiny", settings=SETTINGS, store=session_store)
    ref = report.reference_metrics
    assert report.metrics["tokens"] == ref["tokens"] == 1535
    assert math.isclose(report.metrics["perplexity"], ref["perplexity"], rel_tol=1e-4)
    assert report.metrics["kl_mean"] < 1e-6 and report.metrics["top1_agreement"] > 0.999
    assert not report.cached


def test_int8_costs_some_accuracy_and_is_cached(session_store):
    pytest.importorskip("ctranslate2")
    first = evaluate("tiny-ct2-int8", settings=SETTINGS, store=session_store)  # reference: its parent
    assert first.reference == "tiny"
    assert first.metrics["kl_mean"] > 1e-5 and first.metrics["top1_agreement"] < 1.0
    again = evaluate("tiny-ct2-int8", settings=SETTINGS, store=session_store)
    assert again.cached and again.metrics == first.metrics
    assert again.reference_metrics["perplexity"] == first.reference_metrics["perplexity"]


def test_many_variants_in_one_pass_match_one_at_a_time(session_store):
    pytest.importorskip("ctranslate2")
    settings = EvalSettings(window=96, stride=48, max_tokens=700, threads=1)
    together = evaluate_many(["tiny-ct2-int8", "tiny-ct2-float32"], reference="tiny", settings=settings,
                             store=session_store, use_cache=False)
    alone = evaluate("tiny-ct2-int8", reference="tiny", settings=settings, store=session_store, use_cache=False)
    assert together[0].metrics["kl_mean"] == pytest.approx(alone.metrics["kl_mean"], rel=1e-6)
    assert together[1].metrics["kl_mean"] < together[0].metrics["kl_mean"]


def test_user_text_file(session_store, tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 60)
    report = evaluate("tiny", reference=None, store=session_store, task=f"file:{text}", window=64, stride=32)
    assert report.metrics["tokens"] > 100 and report.metrics["perplexity"] > 1
    from slipstream.errors import NotFound

    with pytest.raises(NotFound, match="no such file"):
        evaluate("tiny", reference=None, store=session_store, task=f"file:{tmp_path / 'missing.txt'}")


def test_every_window_starts_with_bos_for_tokenizers_that_add_one(tmp_path, tiny_llama_dir, monkeypatch):
    """Gemma and Llama 2 are trained with BOS first: each window, not only the first, begins with it
    (as context, never scored), and the same tokens are scored as for a tokenizer without BOS."""
    import shutil

    from tokenizers import Tokenizer, processors

    from slipstream.engines.transformers import TransformersEngine
    from slipstream.models.intake import import_model
    from slipstream.store import Store

    src = tmp_path / "bos-model"
    shutil.copytree(tiny_llama_dir, src)
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(src / "tokenizer.json"))
    store = Store(tmp_path / "home")
    import_model(str(src), "bos", store=store)
    import_model(str(src), "bos2", store=store)
    seen: list[list[int]] = []
    original = TransformersEngine.logprobs
    monkeypatch.setattr(TransformersEngine, "logprobs", lambda self, seqs: seen.extend(map(list, seqs)) or
                        original(self, seqs))
    settings = EvalSettings(window=64, stride=32, max_tokens=300, threads=1)
    report = evaluate("bos2", reference="bos", settings=settings, store=store, use_cache=False)
    assert len(seen) >= 2 * 9 and all(s[0] == 1 for s in seen) and all(len(s) <= 64 for s in seen)
    assert 1 not in {t for s in seen for t in s[1:]}  # the text itself is encoded without BOS
    assert report.metrics["tokens"] == report.reference_metrics["tokens"] == 299
    assert report.metrics["kl_mean"] < 1e-9
