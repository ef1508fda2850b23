"""Log-likelihood multiple choice through every engine, and gates on the results."""

from __future__ import annotations

import pytest

from slipstream.evaluation.gate import Gate
from slipstream.evaluation.multiple_choice import encode_pair
from slipstream.evaluation.run import EvalSettings, check_gates, evaluate


def test_encode_pair_moves_trailing_space(session_store):
    from slipstream.engines.loading import open_engine

    engine = open_engine("tiny", store=session_store, threads=1)
    ctx, cont = encode_pair(engine, "Question: why?\nAnswer: ", "because")
    whole = engine.tokenizer.encode("Question: why?\nAnswer: because", add_special_tokens=False)
    assert ctx + cont == whole and cont
    assert engine.tokenizer.decode(cont).startswith(" ")


def test_arc_through_both_engines_agrees(session_store):
    pytest.importorskip("ctranslate2")
    settings = EvalSettings(task="arc_easy", limit=40, threads=1)
    report = evaluate("tiny-ct2-float32", reference="tiny", settings=settings, store=session_store)
    m, r = report.metrics, report.reference_metrics
    assert m["items"] == r["items"] == 40
    assert m["acc"] == r["acc"] and m["acc_norm"] == r["acc_norm"]
    assert 0 < m["acc_stderr"] < 0.2
    again = evaluate("tiny-ct2-float32", reference="tiny", settings=settings, store=session_store)
    assert again.cached and again.metrics == m


def test_gate_on_accuracy_and_perplexity(session_store):
    pytest.importorskip("ctranslate2")
    reports = [
        evaluate("tiny-ct2-int8", reference="tiny", settings=EvalSettings(task="arc_easy", limit=40, threads=1),
                 store=session_store),
        evaluate("tiny-ct2-int8", reference="tiny", settings=EvalSettings(max_tokens=512, window=128, stride=64,
                                                                          threads=1), store=session_store),
    ]
    results = check_gates(reports, [Gate.parse("perplexity=50%"), Gate.parse("arc_easy.acc=1abs")])
    assert all(r.passed for r in results) and results[0].gate.metric == "wikitext2.perplexity"
    strict = check_gates(reports, [Gate.parse("perplexity=0%")])[0]
    assert strict.passed == (strict.candidate <= strict.reference)
    from slipstream.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match="no evaluated task reports it"):
        check_gates(reports, [Gate.parse("bleu=1%")])


def test_translation_task_runs(session_store):
    report = evaluate("tiny", reference=None, store=session_store,
                      settings=EvalSettings(task="flores_en_fr", limit=4, max_new_tokens=8, threads=1))
    m = report.metrics
    assert m["items"] == 4 and 0 <= m["chrf"] <= 100 and 0 <= m["bleu"] <= 100
    assert len(m["examples"]) == 3
