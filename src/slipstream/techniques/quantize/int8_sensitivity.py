"""Which module kinds W8A8 int8 should leave in float, measured on calibration text.

W8A8 quantizes each linear's weights (one scale per output channel) and its input (one scale per
token, at run time). How much that costs depends on the model and on a few module kinds whose inputs
carry outliers that change from token to token: with every linear in int8 one model stays within 1%
perplexity and another does not, and the kinds worth keeping in float differ (SmolLM2-135M: the down
projections; Gemma-3-270m: those and q/k/v; figures: docs/techniques.md#what-each-costs-in-accuracy,
BENCHMARKS.md#quantization). ``keep_float="auto"`` decides per model, the way Intel Neural
Compressor's accuracy-aware tuning falls back to float op by op: it simulates W8A8 in float32 (weights
rounded to int8 per output channel, inputs rounded to int8 per token: the scheme compressed-tensors'
W8A8 checkpoints run with; round to nearest where the technique uses GPTQ, so the estimate errs on the
safe side: above the real checkpoints' KL), measures the KL divergence from
the full-precision model on a few calibration samples with every kind in int8 and with each kind alone
in float, then keeps kinds in float, the most harmful first, until the KL is within the budget.

A kind is the linears that read one input (q/k/v; gate/up) or share a name (o_proj, down_proj):
keeping q in float but not k would leave that input's int8 rounding in place. The reference is the
same model with every kind in float, which after SmoothQuant's smoothing computes what the original
computes, so no second copy of the model is held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from slipstream.progress import Progress, or_null

SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"))


def kinds(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Module kind -> the name suffixes it covers, in the order the model first names them."""
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        last = name.rsplit(".", 1)[-1]
        group = next((g for g in SIBLINGS if last in g), (last,))
        label = "/".join(group)
        if label not in out:
            out[label] = group
    return out


def fake_int8(x: Any, dim: int) -> Any:
    """Symmetric int8 round trip with one scale per slice along ``dim`` (the rest reduced)."""
    scale = x.abs().amax(dim=dim, keepdim=True).clamp(min=1e-8) / 127.0
    return (x / scale).round().clamp(-127, 127) * scale


class Int8Simulation:
    """The model's linears named in ``names``, switchable between float and simulated W8A8 per kind.
    Use as a context manager: on exit every weight is float again and the hooks are gone."""

    def __init__(self, model: Any, names: Iterable[str]) -> None:
        modules = dict(model.named_modules())
        self.linears = {n: modules[n] for n in names}
        self.float_w = {n: m.weight.detach().clone() for n, m in self.linears.items()}
        self.int8_w = {n: fake_int8(w.float(), dim=1).to(w.dtype) for n, w in self.float_w.items()}
        self.quantized: dict[str, bool] = {}
        self.hooks = [m.register_forward_pre_hook(
            lambda _m, args, name=name: (fake_int8(args[0], dim=-1),) if self.quantized.get(name) else None)
            for name, m in self.linears.items()]

    def set(self, keep: Iterable[str] = (), activations: bool = True, weights: bool = True) -> None:
        """Every linear in simulated W8A8 except those whose name ends in one of ``keep``; with
        ``activations`` or ``weights`` off, only the other half is rounded."""
        import torch

        keep = set(keep)
        with torch.no_grad():
            for name, m in self.linears.items():
                kept = name.rsplit(".", 1)[-1] in keep
                m.weight.copy_(self.float_w[name] if kept or not weights else self.int8_w[name])
                self.quantized[name] = not kept and activations

    def __enter__(self) -> "Int8Simulation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.set(keep=[n.rsplit(".", 1)[-1] for n in self.linears])  # all float: the weights as given
        for h in self.hooks:
            h.remove()


def divergence(model: Any, sim: Int8Simulation, samples: list[list[int]], settings: list[tuple[str, ...]],
               on_sample=lambda: None) -> list[dict[str, float]]:
    """Per setting (suffixes kept in float): the mean KL(float || simulated) per token and the change
    in mean next-token log-loss on ``samples``, against the model with every linear in float."""
    import torch
    import torch.nn.functional as F

    every = sorted({n.rsplit(".", 1)[-1] for n in sim.linears})
    kl = [0.0] * len(settings)
    nll = [0.0] * len(settings)
    count = 0

    def logprobs(ids: Any) -> Any:
        return torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)

    with torch.inference_mode():
        for sample in samples:
            ids = torch.tensor([sample], device=model.device)
            targets = ids[0, 1:, None]
            sim.set(keep=every)
            ref = logprobs(ids)
            ref_nll = -ref.gather(-1, targets).sum().item()
            for i, keep in enumerate(settings):
                sim.set(keep=keep)
                cand = logprobs(ids)
                kl[i] += F.kl_div(cand, ref, log_target=True, reduction="sum").item()
                nll[i] += -cand.gather(-1, targets).sum().item() - ref_nll
                del cand
            count += targets.numel()
            on_sample()
    return [{"kl": k / count, "nll_change": n / count} for k, n in zip(kl, nll)]


@dataclass
class Choice:
    keep: tuple[str, ...]  # name suffixes to leave in float
    kl: float  # the simulated KL with ``keep`` in float
    budget: float
    measured: list[dict[str, Any]] = field(default_factory=list)  # every setting tried, with its figures

    def facts(self) -> dict[str, Any]:
        return {"keep_float_auto": {"keep": list(self.keep), "simulated_kl": self.kl, "kl_budget": self.budget,
                                    "tried": self.measured}}


def choose_keep_float(model: Any, names: Iterable[str], samples: list[list[int]], budget: float,
                      progress: Progress | None = None) -> Choice:
    """The fewest kinds to keep in float (the most harmful first) for a simulated KL within ``budget``."""
    names = list(names)
    by_kind = kinds(names)
    labels = list(by_kind)
    measured: list[dict[str, Any]] = []

    def run(settings: list[tuple[str, ...]], what: str) -> list[dict[str, float]]:
        with or_null(progress).task(what, total=len(samples)) as bar:
            figures = divergence(model, sim, samples, settings, on_sample=bar.advance)
        for keep, f in zip(settings, figures):
            measured.append({"keep": list(keep), **f})
        return figures

    with Int8Simulation(model, names) as sim:
        alone = run([()] + [by_kind[k] for k in labels], "W8A8 auto: each module kind's share")
        if alone[0]["kl"] <= budget:
            return Choice((), alone[0]["kl"], budget, measured)
        order = sorted(labels, key=lambda k: alone[1 + labels.index(k)]["kl"])  # the most harmful first
        first = alone[1 + labels.index(order[0])]
        if first["kl"] <= budget:
            return Choice(by_kind[order[0]], first["kl"], budget, measured)
        prefixes = [tuple(s for k in order[:n] for s in by_kind[k]) for n in range(2, len(order))]
        figures = run(prefixes, "W8A8 auto: keeping kinds in float") if prefixes else []
    for keep, f in zip(prefixes, figures):
        if f["kl"] <= budget:
            return Choice(keep, f["kl"], budget, measured)
    every = tuple(s for k in order for s in by_kind[k])
    return Choice(every, 0.0, budget, measured)
