"""Early exit keeps the first L decoder layers and the model's own final norm and head; the exit is chosen
by its KL from the full model on calibration text, and the result is a dense model every engine runs."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest

from slipstream.errors import InvalidConfig
from slipstream.store.manifest import Manifest
from slipstream.techniques.prune.early_exit import (EarlyExit, check_model, choose_exit, exit_logits, exit_model,
                                                    first_exit, kl_curve)

FEW = {"samples": 2, "sequence_length": 64}
LAYERS = 4


def _llama(tied: bool = True):
    """A tiny random Llama whose RMSNorm weights are random too: with weights of 1 a second pass through
    the final norm changes almost nothing, and a test of the norm's handling would see nothing."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import TINY_VOCAB

    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        tie_word_embeddings=tied, initializer_range=0.2))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.3, 2.0)
    model.generation_config.eos_token_id = 2
    return model.eval()


def _batches(n: int = 2, length: int = 48):
    import torch

    torch.manual_seed(7)
    return [torch.randint(3, 512, (1, length)) for _ in range(n)]


@pytest.fixture(scope="module")
def model():
    return _llama()


@pytest.fixture(scope="module")
def exit_store(tmp_path_factory):
    from slipstream.models.intake import import_model
    from slipstream.store import Store
    from tests.conftest import build_tokenizer

    directory = tmp_path_factory.mktemp("deep-tied") / "model"
    directory.mkdir(parents=True)
    build_tokenizer(directory)
    _llama().save_pretrained(directory)
    store = Store(tmp_path_factory.mktemp("home"))
    import_model(str(directory), "deep", store=store)
    return store


def test_the_exit_at_full_depth_is_the_model_itself_and_every_layer_has_a_kl(model):
    import torch

    batches = _batches()
    curve = kl_curve(model, batches)
    assert list(curve) == [1, 2, 3, 4]
    assert curve[LAYERS] == 0.0
    assert all(curve[k] > 1e-3 for k in (1, 2, 3)), curve
    assert kl_curve(model, batches, first=3) == {3: curve[3], 4: 0.0}
    # the last hidden state already went through the final norm: a second pass would move the exit off the model
    with torch.no_grad():
        out = model(input_ids=batches[0], output_hidden_states=True)
        twice = model.lm_head(model.model.norm(out.hidden_states[LAYERS]))
        assert torch.equal(exit_logits(model, out.hidden_states, LAYERS), out.logits)
        assert (twice - out.logits).abs().max() > 1e-2


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_the_cut_model_computes_the_truncated_forward_of_the_original(model, keep, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    batches = _batches()
    with torch.no_grad():
        expected = exit_logits(model, model(input_ids=batches[0], output_hidden_states=True).hidden_states, keep)
    cut = copy.deepcopy(model)
    facts = exit_model(cut, EarlyExit(layers=keep, **FEW), batches)
    assert facts["exit"] == {"layers": keep, "kl": facts["kl_by_exit"][str(keep)], "rule": f"layers={keep}"}
    assert facts["layers"]["dropped"] == list(range(keep, LAYERS))
    assert facts["parameters"] < facts["parameters_before"]
    cut.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == keep and len(reloaded.model.layers) == keep
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # still tied
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=batches[0]).logits, expected, atol=1e-5, rtol=1e-5)


def test_max_kl_takes_the_earliest_exit_within_the_bound():
    curve = {1: 4.0, 2: 0.5, 3: 0.8, 4: 0.2, 5: 0.0}  # not monotone: the earliest within, not the last
    assert choose_exit(curve, EarlyExit(max_kl=0.9), 5) == 2
    assert choose_exit(curve, EarlyExit(max_kl=0.6), 5) == 2
    assert choose_exit(curve, EarlyExit(max_kl=0.3), 5) == 4
    assert choose_exit(curve, EarlyExit(layers=3), 5) == 3
    with pytest.raises(InvalidConfig, match=r"no exit before layer 5 is within max_kl=0.1; the closest, after 4 "
                                            r"layers, has KL 0.2"):
        choose_exit(curve, EarlyExit(max_kl=0.1), 5)  # full depth (KL 0) skips nothing: never chosen


def test_max_kl_on_a_model(model):
    batches = _batches()
    curve = kl_curve(model, batches)
    bound = curve[3] * 1.001
    facts = exit_model(copy.deepcopy(model), EarlyExit(max_kl=bound, min_layers=1, **FEW), batches)
    expected = min(k for k in (1, 2, 3) if curve[k] <= bound)
    assert facts["exit"]["layers"] == expected and facts["exit"]["rule"] == f"max_kl={bound:g}"
    assert facts["kl_by_exit"] == {str(k): round(v, 6) for k, v in curve.items()}


@pytest.mark.parametrize("options, message", [
    ({}, "set exactly one of max_kl .* or layers .*; neither is set"),
    ({"max_kl": 0.1, "layers": 3}, "set exactly one of max_kl .*; both are set"),
    ({"max_kl": 0.0}, "max_kl must be above 0, got 0.0"),
    ({"layers": 2, "min_layers": 0}, "min_layers must be at least 1, got 0"),
    ({"layers": 2, "min_layers": 3}, "layers=2 is below min_layers=3"),
    ({"layers": "2"}, r"layers='2' is not valid; expected int or None"),
    ({"max_kl": 0.1, "calibration": "wikitext2"}, "is evaluation text"),
])
def test_invalid_configs_are_refused(options, message):
    with pytest.raises(InvalidConfig, match=message):
        EarlyExit(**options)


def test_configs_that_skip_nothing_are_refused_against_the_model(model):
    with pytest.raises(InvalidConfig, match=r"layers=4 skips nothing; the model has 4 layers \(exit after 1 to 3\)"):
        check_model(model, EarlyExit(layers=LAYERS))
    with pytest.raises(InvalidConfig, match="min_layers=4 leaves nothing to skip in 4 layers"):
        check_model(model, EarlyExit(max_kl=0.1, min_layers=LAYERS))
    assert EarlyExit(max_kl=0.05).slug() == "exit-kl0.05" and EarlyExit(max_kl=1e9).slug() == "exit-kl1e09"
    assert EarlyExit(layers=28, min_layers=2).slug() == "exit-l28-min2"
    assert [first_exit(EarlyExit(**o), 30) for o in ({"max_kl": 0.1}, {"layers": 20}, {"layers": 9},
                                                     {"max_kl": 0.1, "min_layers": 26})] == [15, 15, 9, 26]


def test_optimize_makes_a_smaller_tied_model_that_engines_run(exit_store):
    import torch
    from transformers import AutoModelForCausalLM

    from slipstream.engines.loading import open_engine
    from slipstream.engines.protocol import SamplingParams
    from slipstream.pipeline import optimize

    variant = optimize("deep", "early-exit", {"layers": 3} | FEW, store=exit_store)
    assert variant.name == "deep-exit-l3"
    parent = exit_store.get("deep")
    config = json.loads((variant.path / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["tie_word_embeddings"] is True
    assert variant.parameters < parent.parameters and variant.size_bytes < parent.size_bytes
    facts = Manifest.read(variant.path).extra["facts"]
    assert facts["exit"]["layers"] == 3 and list(facts["kl_by_exit"]) == ["2", "3", "4"]  # from half the depth
    assert facts["kl_by_exit"]["4"] == 0.0 and facts["calibration"]["source"] == "wikitext2-valid"

    prompt = [1, 45, 100, 200, 33, 7]
    hf = AutoModelForCausalLM.from_pretrained(variant.path, dtype=torch.float32).eval()
    with torch.no_grad():
        greedy = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(prompt):].tolist()
    engine = open_engine(variant.name, store=exit_store)
    tokens = engine.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))[0].token_ids
    assert list(tokens) == greedy
    if importlib.util.find_spec("ctranslate2"):  # the cut model converts like any other
        ct2 = optimize(variant.name, "ctranslate2", {"quantization": "float32"}, store=exit_store)
        ct2_tokens = open_engine(ct2.name, store=exit_store).generate(
            [prompt], SamplingParams(max_tokens=8, ignore_eos=True))[0].token_ids
        assert list(ct2_tokens) == greedy


def test_optimize_with_max_kl_records_why(exit_store):
    from slipstream.pipeline import optimize

    variant = optimize("deep", "early-exit", {"max_kl": 1e9} | FEW, store=exit_store)
    facts = Manifest.read(variant.path).extra["facts"]
    assert facts["exit"] == {"layers": 2, "kl": facts["kl_by_exit"]["2"], "rule": "max_kl=1e+09"}  # half the depth
    with pytest.raises(InvalidConfig, match="no exit before layer 4 is within max_kl=1e-09"):
        optimize("deep", "early-exit", {"max_kl": 1e-9} | FEW, store=exit_store)
