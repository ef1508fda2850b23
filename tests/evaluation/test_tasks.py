"""The task suite: names, data errors, limits, user tasks, metrics computed by hand."""

from __future__ import annotations

import json

import pytest

from slipstream.errors import InvalidConfig, NotFound
from slipstream.evaluation.gate import Gate, parse_drop
from slipstream.evaluation.generation import exact_match, qa_metrics, token_f1, translation_metrics
from slipstream.evaluation.datasets import GenerationItem
from slipstream.evaluation.tasks import get_task, known


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(NotFound) as info:
        get_task("hellaswag")
    for name in ("wikitext2", "arc_easy", "arc_challenge", "flores_en_de", "flores_en_fr", "embeddings", "qa:PATH",
                 "classify:PATH", "custom:SPEC"):
        assert name in str(info.value)
    assert len(known()) == 10


def test_bundled_data_sizes_and_deterministic_limit():
    easy, challenge = get_task("arc_easy"), get_task("arc_challenge")
    assert len(easy.load(None)) == 2376 and len(challenge.load(None)) == 1172
    first = easy.load(10)
    assert first == easy.load(None)[:10] == easy.load(10)
    assert first[0].context.startswith("Question: ") and first[0].context.endswith("\nAnswer:")
    assert all(0 <= it.answer < len(it.choices) for it in easy.load(None))
    flores = get_task("flores_en_de").load(5)
    assert len(flores) == 5 and "German" in flores[0].prompt and flores[0].references[0]
    assert len(get_task("flores_en_fr").load(None)) == 1012


def test_malformed_jsonl_names_file_and_line(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "2+2?", "answer": "4"}\n{"question": "broken", \n')
    with pytest.raises(InvalidConfig, match=r"qa.jsonl:2: not valid JSON"):
        get_task(f"qa:{data}").load(None)
    data.write_text('{"question": "2+2?", "answer": "4"}\n\n{"answer": "x"}\n')
    with pytest.raises(InvalidConfig, match=r"qa.jsonl:3: no field 'question'"):
        get_task(f"qa:{data}").load(None)
    with pytest.raises(NotFound, match="no such file"):
        get_task(f"qa:{tmp_path / 'missing.jsonl'}")


def test_custom_tasks(tmp_path):
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"q": "Sky colour?", "options": ["blue", "green"], "gold": "blue", "ans": "blue"},
        {"q": "Grass colour?", "options": ["red", "green"], "gold": 1, "ans": "green"},
    ]) + "\n")
    mc = tmp_path / "mc.yaml"
    mc.write_text("name: colours\ndata: items.jsonl\ntype: multiple_choice\nprompt: \"Q: {q}\\nA:\"\n"
                  "choices: options\nanswer: gold\n")
    task = get_task(f"custom:{mc}")
    items = task.load(None)
    assert task.name == "custom:colours" and task.kind == "multiple_choice"
    assert [it.answer for it in items] == [0, 1] and items[0].context == "Q: Sky colour?\nA:"
    gen = tmp_path / "gen.json"
    gen.write_text(json.dumps({"data": "items.jsonl", "type": "generation", "prompt": "{q}", "reference": "ans",
                               "metric": "exact_match"}))
    task = get_task(f"custom:{gen}")
    assert task.kind == "generation" and task.metrics[0] == "exact_match"
    assert [it.references for it in task.load(None)] == [("blue",), ("green",)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: items.jsonl\ntype: generation\nprompt: '{missing}'\nreference: ans\n")
    with pytest.raises(InvalidConfig, match=r"items.jsonl:1: the prompt template needs field 'missing'"):
        get_task(f"custom:{bad}").load(None)
    bad.write_text("data: items.jsonl\ntype: ranking\nprompt: x\n")
    with pytest.raises(InvalidConfig, match="type must be multiple_choice or generation"):
        get_task(f"custom:{bad}")
    bad.write_text("data: items.jsonl\ntype: generation\nprompt: x\nreference: ans\ntemprature: 3\n")
    with pytest.raises(InvalidConfig, match="unknown key"):
        get_task(f"custom:{bad}")


def test_qa_metrics_by_hand():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert token_f1("in Paris France", ["Paris"]) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    items = [GenerationItem("1", "", ("Paris",)), GenerationItem("2", "", ("4", "four"))]
    m = qa_metrics(["Paris.", "five"], items)
    assert m["exact_match"] == 0.5 and m["f1"] == 0.5 and m["items"] == 2


def test_translation_metrics_match_sacrebleu():
    import sacrebleu

    hyps, refs = ["Der Hund läuft schnell.", "Ich bin müde."], ["Der Hund rennt schnell.", "Ich bin sehr müde."]
    m = translation_metrics(hyps, refs, n_bootstrap=50)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)


def test_gates():
    g = Gate.parse("perplexity=1%")
    assert g.relative and g.max_drop == 0.01 and g.lower_is_better
    assert g.check(20.0, 20.1).passed and not g.check(20.0, 20.3).passed
    r = g.check(20.0, 20.3)
    assert r.drop == pytest.approx(0.015) and "fails by 0.50%" in r.message()
    acc = Gate.parse("arc_easy.acc_norm", "0.02", absolute=True)
    assert not acc.relative and not acc.lower_is_better
    assert acc.check(0.50, 0.485).passed and not acc.check(0.50, 0.47).passed
    assert parse_drop("0.02abs") == (0.02, False) and parse_drop("2%") == (0.02, True)
    with pytest.raises(InvalidConfig, match="expected a number"):
        parse_drop("lots")
    with pytest.raises(InvalidConfig, match="METRIC=DROP"):
        Gate.parse("perplexity")
