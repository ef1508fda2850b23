"""Translation evaluation of seq2seq models: the bare source behind the family's prefix, through the engine,
scored by sacrebleu's BLEU and chrF; the metrics that need next-token scores are refused in one line."""

from __future__ import annotations

import json
import math

import pytest

from slipstream.engines.protocol import Completion, EngineInfo, SamplingParams
from slipstream.errors import Unsupported
from slipstream.evaluation import generation
from slipstream.evaluation.datasets import GenerationItem
from slipstream.evaluation.tasks import get_task
from slipstream.evaluation.translation import seq2seq_items
from slipstream.models.intake import import_model

pytest.importorskip("sacrebleu")


@pytest.fixture(scope="module")
def eval_store(tmp_path_factory, tiny_t5_dir, tiny_marian_dir):
    pytest.importorskip("ctranslate2")
    from slipstream.pipeline import optimize
    from slipstream.store import Store

    store = Store(tmp_path_factory.mktemp("home-eval"))
    import_model(str(tiny_t5_dir), "t5", store=store)
    import_model(str(tiny_marian_dir), "marian", store=store)
    optimize("t5", "ctranslate2", {"quantization": "float32"}, name="t5-ct2", store=store)
    return store


def test_flores_sources_get_the_family_prefix():
    items = get_task("flores_en_de").load(2)
    t5 = seq2seq_items(items, "t5", None)
    assert t5[0].prompt == "translate English to German: " + items[0].meta["source"]
    assert "Translate this" not in t5[0].prompt and t5[0].references == items[0].references
    assert seq2seq_items(items, "marian", None)[1].prompt == items[1].meta["source"]
    assert seq2seq_items(items, "t5", ">>deu<< ")[0].prompt == ">>deu<< " + items[0].meta["source"]
    user = GenerationItem("0", "Hallo", ("Hello",))  # a user's task keeps its own prompt
    assert seq2seq_items([user], "t5", None)[0].prompt == "Hallo"
    with pytest.raises(Unsupported, match="m2m_100 model needs its target-language token forced"):
        seq2seq_items(items, "m2m_100", None)


class _Echo:
    """An engine whose every output is the reference of its source: the scorer must give 100."""

    name = "echo"
    max_context = 512

    def __init__(self, items):
        self.tokenizer = _TextTokenizer()
        self.answers = {it.prompt: it.references[0] for it in items}

    def generate(self, prompts, params: SamplingParams):
        return [Completion([1], self.answers[self.tokenizer.decode(p)], "stop", len(p)) for p in prompts]

    def info(self):
        return EngineInfo("echo", "cpu", "float32", 1)


class _TextTokenizer:
    has_chat_template = False

    def encode(self, text, add_special_tokens=True):
        return list(text.encode())

    def decode(self, ids):
        return bytes(ids).decode()


def test_identical_translations_score_100():
    items = seq2seq_items(get_task("flores_en_de").load(5), "marian", None)
    outputs = generation.generate_all(_Echo(items), items, max_new_tokens=8, stop=(), chat=False)
    metrics = generation.translation_metrics(outputs, [it.references[0] for it in items])
    assert metrics["bleu"] == pytest.approx(100) and metrics["chrf"] == pytest.approx(100)
    assert metrics["items"] == 5
    worse = generation.translation_metrics(["Hallo Welt."] * 5, [it.references[0] for it in items])
    assert worse["bleu"] < 5 and worse["chrf"] < 30


def test_flores_through_the_scorer_on_both_engines(eval_store):
    from slipstream.evaluation.run import EvalSettings, evaluate

    report = evaluate("t5-ct2", store=eval_store, settings=EvalSettings(task="flores_en_de", limit=3, max_new_tokens=8))
    for metrics in (report.metrics, report.reference_metrics):  # the CTranslate2 variant, then its parent
        assert metrics["items"] == 3
        assert 0 <= metrics["bleu"] <= 100 and 0 <= metrics["chrf"] <= 100 and not math.isnan(metrics["chrf"])
        assert metrics["examples"][0]["prompt"].startswith("translate English to German: ")
    assert report.metrics["engine"]["engine"] == "ctranslate2"
    assert report.reference_metrics["engine"]["engine"] == "transformers"
    # a tiny random model: greedy tokens equal on both engines, so the same sentences and scores
    outputs = [[e["output"] for e in m["examples"]] for m in (report.metrics, report.reference_metrics)]
    assert outputs[0] == outputs[1]
    assert report.metrics["chrf"] == report.reference_metrics["chrf"]


def test_perplexity_and_multiple_choice_are_refused_in_one_line(eval_store):
    from slipstream.evaluation.run import EvalSettings, evaluate

    with pytest.raises(Unsupported, match=r"perplexity \(wikitext2\) takes causal-lm models; 't5-ct2' is a seq2seq"):
        evaluate("t5-ct2", store=eval_store, settings=EvalSettings(task="wikitext2"))
    with pytest.raises(Unsupported, match=r"multiple choice \(arc_easy\) takes causal-lm models; 'marian' is a"):
        evaluate("marian", store=eval_store, reference=None, settings=EvalSettings(task="arc_easy", limit=2))


def test_cli_evaluates_a_marian_model_with_a_prefix(eval_store):
    from tests.cli.test_cli import slipstream

    proc = slipstream("evaluate", "marian", "--task", "flores_en_fr", "--limit", "2", "--max-new-tokens", "6",
                      "--source-prefix", ">>fra<< ", "--json", home=eval_store.home)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["reports"][0]
    assert report["settings"]["source_prefix"] == ">>fra<< "
    assert report["metrics"]["examples"][0]["prompt"].startswith(">>fra<< ")
    assert {"bleu", "chrf"} <= set(report["metrics"])


def test_beam_size_reaches_the_engine_and_the_cache_key(eval_store):
    from slipstream.evaluation.run import EvalSettings, evaluate

    settings = EvalSettings(task="flores_en_de", limit=2, max_new_tokens=6, beam_size=3)
    report = evaluate("t5-ct2", store=eval_store, settings=settings)
    assert report.settings["beam_size"] == 3 and report.metrics["engine"]["details"]["beam_size"] == 3
    assert report.reference_metrics["engine"]["details"]["beam_size"] == 3


def test_beam_size_on_a_causal_lm_is_refused(store, tiny_llama_dir):
    from slipstream.engines.loading import open_engine

    import_model(str(tiny_llama_dir), "llama", store=store)
    with pytest.raises(Unsupported, match="engine option beam_size is for seq2seq models; 'llama' is a causal-lm"):
        open_engine("llama", store=store, beam_size=2)
