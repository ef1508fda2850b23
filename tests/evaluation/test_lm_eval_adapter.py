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


NEXT_WORD_TASK = """task: next_word_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: " {{{{target}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
metadata:
  version: 1.0
"""


def test_lm_eval_json_is_the_only_thing_on_stdout(tmp_path, tiny_llama_dir):
    """A perplexity aggregation makes lm-eval print ``bootstrapping for stddev`` to stdout: it goes to
    stderr, and stdout is exactly one JSON document."""
    import json
    import os
    import subprocess
    import sys

    from slipstream.models.intake import import_model
    from slipstream.store import Store

    store = Store(tmp_path / "home")
    import_model(str(tiny_llama_dir), "tiny", store=store)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "data.jsonl").write_text("".join(json.dumps({"context": c, "target": t}) + "\n" for c, t in (
        ("Robert Boulter is an English", "actor"), ("The river flows into the", "sea"),
        ("The game was released in Japan in", "2011"))))
    (tasks / "next_word_local.yaml").write_text(NEXT_WORD_TASK.format(data=tasks / "data.jsonl"))
    proc = subprocess.run([sys.executable, "-m", "slipstream.cli.main", "lm-eval", "tiny", "--tasks", "next_word_local",
                           "--include-path", str(tasks), "--threads", "1", "--json"], capture_output=True, text=True,
                          env=os.environ | {"SLIPSTREAM_HOME": str(store.home)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(proc.stdout)  # raises on anything before or after the document
    assert scores["next_word_local"]["perplexity,none"] > 1
    assert "bootstrapping for stddev" in proc.stderr  # lm-eval did print it: to stderr
