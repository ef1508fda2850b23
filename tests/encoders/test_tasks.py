"""A model's task is read at intake and checked against techniques and engines, in one line."""

from __future__ import annotations

import numpy as np
import pytest

from slipstream.errors import Unsupported
from slipstream.models.intake import import_model
from slipstream.models.tasks import task_from_config, task_of
from slipstream.pipeline import optimize
from tests.conftest import build_tiny_bert


@pytest.mark.parametrize("config, task", [
    ({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, "causal-lm"),
    ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "causal-lm"),
    ({"architectures": ["MarianMTModel"], "model_type": "marian", "is_encoder_decoder": True}, "seq2seq"),
    ({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True}, "seq2seq"),
    ({"architectures": ["BertModel"], "model_type": "bert"}, "embedding"),
    ({"architectures": ["MPNetForMaskedLM"], "model_type": "mpnet"}, "embedding"),
    ({"architectures": ["BertForSequenceClassification"], "model_type": "bert"}, "classification"),
    ({"model_type": "t5", "is_encoder_decoder": True}, "seq2seq"),
])
def test_task_from_config(config, task):
    assert task_from_config(config) == task


def test_intake_records_the_task_and_variants_inherit_it(store, tiny_bert_dir, tiny_llama_dir):
    bert = import_model(str(tiny_bert_dir), "bert", store=store)
    llama = import_model(str(tiny_llama_dir), "llama", store=store)
    assert task_of(bert) == "embedding" and task_of(llama) == "causal-lm"
    assert (bert.path / "1_Pooling" / "config.json").exists()  # the pooling travels with the weights
    cast = optimize("bert", "cast", {"dtype": "bfloat16"}, store=store)
    assert task_of(cast) == "embedding"


def test_a_technique_for_another_task_is_refused_in_one_line(store, tiny_bert_dir):
    import_model(str(tiny_bert_dir), "bert", store=store)
    with pytest.raises(Unsupported, match=r"technique 'smoothquant' takes causal-lm models; 'bert' is an embedding"):
        optimize("bert", "smoothquant", store=store)


def test_transformers_encoder_pools_as_the_model_says(store, tiny_bert_dir):
    import torch
    from transformers import AutoModel

    from slipstream.engines.loading import open_engine

    import_model(str(tiny_bert_dir), "bert", store=store)
    engine = open_engine("bert", store=store)
    texts = ["The cat sat on the mat.", "A much longer sentence about the history of the city of Paris."]
    ids = engine.encode_texts(texts)
    got = engine.embed(ids)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    for row, seq in zip(got, ids):  # one at a time: no padding at all
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([seq])).last_hidden_state[0].mean(0)
        ref = (hidden / hidden.norm()).numpy()
        np.testing.assert_allclose(row, ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(engine.embed(ids[::-1]), got[::-1], atol=1e-6)  # answers in the order given


def test_an_engine_that_cannot_run_the_task_is_refused(store, tiny_bert_dir):
    from slipstream.engines.loading import open_engine

    import_model(str(tiny_bert_dir), "bert", store=store)
    with pytest.raises(Unsupported, match="engine 'vllm' cannot run 'bert' \\(embedding, hf\\)"):
        open_engine("bert", engine="vllm", store=store)
