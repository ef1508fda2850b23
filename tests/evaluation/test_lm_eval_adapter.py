"""lm-evaluation-harness evaluates a slipstream variant through the adapter, offline, and agrees
with slipstream's own scoring of the same items exactly."""

from __future__ import annotations

import pytest

lm_eval = pytest.importorskip("lm_eval")


def test_lm_eval_scores_a_variant_like_slipstream_does(session_store, tmp_path):
    pytest.importorskip("ctranslate2")
    from lm_eval.tasks import TaskManager

    from slipstream.evaluation.lm_eval_adapter import SlipstreamLM
    from slipstream.evaluation.lm_eval_tasks import write_arc_task
    from slipstream.evaluation.run import EvalSettings, evaluate

    task = write_arc_task(tmp_path, "Easy", limit=30)
    model = SlipstreamLM("tiny-ct2-int8", home=str(session_store.home), threads=1)
    results = lm_eval.simple_evaluate(model=model, tasks=[task], task_manager=TaskManager(include_path=str(tmp_path)))
    theirs = results["results"][task]
    ours = evaluate("tiny-ct2-int8", reference=None, store=session_store,
                    settings=EvalSettings(task="arc_easy", limit=30, threads=1)).metrics
    assert theirs["acc,none"] == pytest.approx(ours["acc"], abs=1e-9)
    assert theirs["acc_norm,none"] == pytest.approx(ours["acc_norm"], abs=1e-9)
    assert theirs["acc_stderr,none"] == pytest.approx(ours["acc_stderr"], rel=1e-6)


def test_rolling_and_generation_requests(session_store):
    pytest.importorskip("ctranslate2")
    from lm_eval.api.instance import Instance

    from slipstream.engines.loading import open_engine
    from slipstream.evaluation.lm_eval_adapter import SlipstreamLM

    model = SlipstreamLM("tiny-ct2-float32", home=str(session_store.home), threads=1)
    text = "The game was released in Japan in 2011. " * 5
    rolling = model.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])[0]
    engine = open_engine("tiny", store=session_store, threads=1)
    tok = engine.tokenizer
    ids = [tok.eos_token_ids[0]] + tok.encode(text, add_special_tokens=False)
    assert rolling == pytest.approx(float(engine.score([ids])[0].sum()), rel=1e-4)
    gen = model.generate_until([Instance("generate_until", {}, ("The game", {"until": ["\n"], "max_gen_toks": 6}), 0)])
    assert isinstance(gen[0], str) and "\n" not in gen[0]
