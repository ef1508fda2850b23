"""W8A8's ``keep_float="auto"`` (``slipstream.techniques.quantize.int8_sensitivity``): the simulation
leaves the model exactly as it found it, and the module kind whose int8 input loses the most is the
one kept in float first."""

from __future__ import annotations

import pytest
import torch

from slipstream.techniques.quantize.int8_sensitivity import (Int8Simulation, choose_keep_float, divergence,
                                                               kinds)

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _names(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in LINEARS]


def _samples(vocab: int, n: int = 4, length: int = 64) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (length,), generator=g).tolist() for _ in range(n)]


@pytest.fixture
def model(tiny_llama_dir):
    from slipstream.techniques.hf_io import load_model

    return load_model(tiny_llama_dir)


def _down_outliers(model) -> None:
    """Rewrite the model exactly so that a few channels of every down projection's input carry values
    60x the rest (up_proj rows x60, down_proj columns /60): per-token int8 rounding of that input
    then wipes out the other channels, as in Gemma-3-270m's MLPs."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[:4] *= 60
            layer.mlp.down_proj.weight[:, :4] /= 60


def test_kinds_group_the_linears_that_read_one_input(model):
    assert kinds(_names(model)) == {"q_proj/k_proj/v_proj": ("q_proj", "k_proj", "v_proj"), "o_proj": ("o_proj",),
                                    "gate_proj/up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}


def test_the_simulation_leaves_the_model_as_it_was(model):
    ids = torch.tensor(_samples(model.config.vocab_size, 1))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with Int8Simulation(model, _names(model)) as sim:
        sim.set(keep=())
        with torch.inference_mode():
            simulated = model(input_ids=ids).logits
    with torch.inference_mode():
        after = model(input_ids=ids).logits
    assert not torch.equal(simulated, before)  # the simulation changed the outputs while it ran
    assert torch.equal(after, before)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_the_costliest_kind_is_kept_first(model):
    _down_outliers(model)
    samples = _samples(model.config.vocab_size)
    names = _names(model)
    tight = choose_keep_float(model, names, samples, budget=1e-9)
    figures = {tuple(m["keep"]): m for m in tight.measured}
    every_int8, down_float = figures[()]["kl"], figures[("down_proj",)]["kl"]
    assert every_int8 > 0 and down_float < 0.2 * every_int8  # the down projections' input carries the loss
    for keep in (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj")):
        assert figures[keep]["kl"] > 0.5 * every_int8
    # the budget is below any setting with int8 left, so every kind is kept: most harmful first
    assert tight.keep[0] == "down_proj" and sorted(tight.keep) == sorted(LINEARS) and tight.kl == 0.0
    # with a budget between the two, the down projections alone
    middle = choose_keep_float(model, names, samples, budget=(every_int8 + down_float) / 2)
    assert middle.keep == ("down_proj",) and middle.kl == pytest.approx(down_float)
    # with one above every linear in int8, none
    loose = choose_keep_float(model, names, samples, budget=2 * every_int8)
    assert loose.keep == () and len(loose.measured) == 5  # every int8, then each of the four kinds in float
    assert loose.facts()["keep_float_auto"]["simulated_kl"] == pytest.approx(every_int8)


def test_divergence_is_zero_with_everything_in_float(model):
    names = _names(model)
    with Int8Simulation(model, names) as sim:
        (f_float, f_int8) = divergence(model, sim, _samples(model.config.vocab_size, 2), [LINEARS, ()])
    assert f_float == {"kl": 0.0, "nll_change": 0.0}
    assert f_int8["kl"] > 0
