"""SmoothQuant smoothing (Xiao et al., 2023): move activation outliers into the weights.

For a linear layer fed by a norm (or by another linear), ``y = W x`` equals ``(W diag(s)) (x / s)``.
Dividing the norm's weight by ``s`` and multiplying the linear's input columns by ``s`` leaves the
model's function unchanged in full precision, while per-token int8 activation quantization (what
CTranslate2's int8 GEMMs do on CPU) loses far less. ``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)``,
with activation maxima measured on calibration text.

``alpha="auto"`` picks alpha per group instead of one for the whole model, as Intel Neural Compressor's
SmoothQuant auto-tuning does: on the first ``search_samples`` calibration samples each group's linears
are run in simulated W8A8 (weights rounded to int8 per output channel, the smoothed input per token)
for every candidate alpha and for no smoothing at all, and the one whose outputs stay closest to the
float outputs (squared error) is kept. Every group's input comes from the float model, which smoothing
leaves unchanged, so one pass measures them all. With ``lm_head=True`` the head gets its own alpha,
which matters: a head can want far less smoothing than the layers (Gemma-3-270m's prefers 0.2, where
0.7 makes its error several times that of no smoothing). Before CTranslate2 int8, ``alpha="auto"`` with
the head lowers KL against one alpha of 0.7 on both SmolLM2-135M and Gemma-3-270m, but the perplexity
need not follow: the output error it minimizes tracks KL, not perplexity, so the search tries both.
GPTQ onto CTranslate2's grid after the smoothing (:mod:`~slipstream.techniques.quantize.int8_rows`)
takes CTranslate2 int8 within 1% (figures: docs/techniques.md#ctranslate2-smoothquant-and-int8-rows,
BENCHMARKS.md#quantization).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slipstream.calibration import Calibration, shared_statistics
from slipstream.errors import Unsupported
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig


@dataclasses.dataclass(frozen=True)
class SmoothQuant(TechniqueConfig):
    """Smooth activations for W8A8 engines; the model stays full precision."""

    technique = "smoothquant"
    alpha: float | Literal["auto"] = 0.7  # "auto": chosen per group from AUTO_ALPHAS (module docstring)
    lm_head: bool = False  # also smooth the output projection (unties it from the embeddings: bigger)
    calibration: str = "wikitext2-valid"
    samples: int = 64
    sequence_length: int = 512
    search_samples: int = 8  # alpha="auto": the calibration samples the search runs on (at most samples)

    def __post_init__(self) -> None:
        from slipstream.errors import InvalidConfig

        super().__post_init__()
        if self.alpha != "auto" and not 0.0 <= self.alpha <= 1.0:
            raise InvalidConfig(f"smoothquant: alpha must be in [0, 1] or auto, got {self.alpha}")
        if self.search_samples < 1:
            raise InvalidConfig(f"smoothquant: search_samples must be >= 1, got {self.search_samples}")
        if self.alpha != "auto" and self.search_samples != SmoothQuant.search_samples:
            raise InvalidConfig("smoothquant: search_samples applies to alpha=auto only")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        if self.alpha == "auto":
            alpha = "-auto" + ("" if self.search_samples == SmoothQuant.search_samples else f"-n{self.search_samples}")
        else:
            alpha = f"{self.alpha:g}"
        return f"sq{alpha}" + ("-head" if self.lm_head else "")

    def stand_in(self) -> "SmoothQuant":
        """A fixed alpha instead of the per-group search: smoothing rescales values only, and the head is
        untied (or not) just the same."""
        if self.alpha != "auto":
            return self
        return dataclasses.replace(self, alpha=0.5, search_samples=SmoothQuant.search_samples)


# alpha="auto"'s candidates; None is no smoothing (s = 1), so a group is never smoothed for the worse
AUTO_ALPHAS: tuple[float | None, ...] = (None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# alpha="auto" measures a linear with more output rows than this (a head over a large vocabulary) on
# a fixed random sample of them: each row is rounded on its own, so the sample's error estimates the whole
SEARCH_ROWS = 8192
HEAD_GROUP = "norm->lm_head"


@dataclass
class Group:
    """Linears that read the same input, and what produces that input (a norm or a linear)."""

    name: str  # "layers.0.input_layernorm->q_proj/k_proj/v_proj"
    source: Any  # nn.Module: RMSNorm/LayerNorm or nn.Linear
    linears: list[Any]
    norm_offset: float = 0.0  # Gemma's RMSNorm computes (1 + weight) * x
    # v_proj -> o_proj under grouped-query attention: each source channel feeds ``repeat`` consumer
    # channels (one per query head sharing the key/value head), shaped (kv_heads, repeat, head_dim).
    grouped: tuple[int, int, int] | None = None


def smoothing_groups(model: Any, lm_head: bool = False) -> list[Group]:
    """The (source, linears) pairs of a Llama-style decoder (Llama, Mistral, Qwen2, Gemma 1-3)."""
    cfg = model.config
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not hasattr(layers[0], "self_attn") or not hasattr(layers[0].mlp, "up_proj"):
        raise Unsupported(f"smoothquant: no rule for architecture {cfg.model_type!r} (Llama-style decoders only)")
    offset = 1.0 if cfg.model_type.startswith("gemma") else 0.0
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    shape = (kv_heads, cfg.num_attention_heads // kv_heads, head_dim)
    groups = []
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        # Gemma 2/3 read the MLP's input from pre_feedforward_layernorm (post_attention_layernorm feeds the residual)
        sandwich = getattr(layer, "pre_feedforward_layernorm", None) is not None
        ffn_norm = "pre_feedforward_layernorm" if sandwich else "post_attention_layernorm"
        groups.append(Group(f"layers.{i}.input_layernorm->q_proj/k_proj/v_proj", layer.input_layernorm,
                            [attn.q_proj, attn.k_proj, attn.v_proj], offset))
        groups.append(Group(f"layers.{i}.v_proj->o_proj", attn.v_proj, [attn.o_proj], grouped=shape))
        groups.append(Group(f"layers.{i}.{ffn_norm}->gate_proj/up_proj", getattr(layer, ffn_norm),
                            [mlp.gate_proj, mlp.up_proj], offset))
        groups.append(Group(f"layers.{i}.up_proj->down_proj", mlp.up_proj, [mlp.down_proj]))
    if lm_head:
        if getattr(cfg, "tie_word_embeddings", False):
            import torch

            model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
            cfg.tie_word_embeddings = False
        groups.append(Group(HEAD_GROUP, model.model.norm, [model.lm_head], offset))
    return groups


def head_group(model: Any) -> list[Group]:
    """The output head's input as a group to measure (not to smooth: that unties a tied head, lm_head=True)."""
    head = model.get_output_embeddings()
    return [Group(HEAD_GROUP, model.model.norm, [head])] if head is not None else []


def feed(model: Any, groups: list[Group], batches, on_input) -> None:
    """Run ``batches`` (token id lists) through ``model``, calling ``on_input(i, x)`` with group ``i``'s
    input as a (tokens, channels) tensor each time its linears read it."""
    import torch

    hooks = [g.linears[0].register_forward_pre_hook(
        lambda _m, args, i=i: on_input(i, args[0].detach().reshape(-1, args[0].shape[-1])))
        for i, g in enumerate(groups)]
    try:
        with torch.inference_mode():
            for ids in batches:
                model(input_ids=torch.tensor([ids], device=model.device))
    finally:
        for h in hooks:
            h.remove()


def activation_maxima(model: Any, groups: list[Group], batches) -> list[Any]:
    """Per-input-channel max |x| of each group's input, accumulated over the calibration stream."""
    import torch

    maxima: list[Any] = [None] * len(groups)

    def accumulate(i: int, x: Any) -> None:
        m = x.abs().amax(0).float()
        maxima[i] = m if maxima[i] is None else torch.maximum(maxima[i], m)

    feed(model, groups, batches, accumulate)
    return maxima


def factors(g: Group, xmax: Any, alpha: float | None) -> tuple[Any, Any]:
    """The smoothing factors of group ``g`` at ``alpha``: per source channel ``s`` (the producer is
    divided by it) and per consumer input column (the linears are multiplied by it). None: all ones."""
    import torch

    wmax = torch.stack([lin.weight.detach().abs().amax(0).float() for lin in g.linears]).amax(0)
    if g.grouped:  # one factor per source channel: the max over the query heads sharing it
        xmax, wmax = (t.view(g.grouped).amax(1).reshape(-1) for t in (xmax, wmax))
    if alpha is None:
        s = torch.ones_like(wmax)
    else:
        s = (xmax.clamp(min=1e-5).pow(alpha) / wmax.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)
    consumer = s
    if g.grouped:
        kv, rep, hd = g.grouped
        consumer = s.view(kv, 1, hd).expand(kv, rep, hd).reshape(-1)
    return s, consumer


def smooth(model: Any, groups: list[Group], maxima: list[Any], alpha: float | list[float | None]) -> None:
    """Smooth every group in place, at one ``alpha`` or one per group (None: leave that group)."""
    import torch

    alphas = alpha if isinstance(alpha, list) else [alpha] * len(groups)
    with torch.no_grad():
        for g, xmax, a in zip(groups, maxima, alphas):
            if a is None:
                continue
            s, consumer = factors(g, xmax, a)
            src = g.source
            if isinstance(src, torch.nn.Linear):  # the producer's output rows
                src.weight.div_(s[:, None].to(src.weight.dtype))
                if src.bias is not None:
                    src.bias.div_(s.to(src.bias.dtype))
            else:
                w = src.weight
                w.copy_(((w.float() + g.norm_offset) / s - g.norm_offset).to(w.dtype))
                if getattr(src, "bias", None) is not None:
                    src.bias.div_(s.to(src.bias.dtype))
            for lin in g.linears:
                lin.weight.mul_(consumer[None, :].to(lin.weight.dtype))


def search_alphas(model: Any, groups: list[Group], maxima: list[Any], batches,
                  candidates: tuple[float | None, ...] = AUTO_ALPHAS) -> tuple[list[float | None], list[list[float]]]:
    """Per group, the candidate alpha whose simulated W8A8 outputs (int8 weights per output channel,
    the smoothed input in int8 per token) are closest to the float outputs over ``batches``; and every
    candidate's squared error relative to the outputs' squared norm. The producer's rounding is left
    out: scaling a weight's output rows does not change its per-row int8 rounding."""
    import torch

    from slipstream.techniques.quantize.int8_sensitivity import fake_int8

    columns = [[factors(g, xmax, a)[1] for a in candidates] for g, xmax in zip(groups, maxima)]
    sample = torch.Generator().manual_seed(0)
    rows = [[torch.randperm(lin.out_features, generator=sample)[:SEARCH_ROWS].sort().values
             if lin.out_features > SEARCH_ROWS else slice(None) for lin in g.linears] for g in groups]
    error = torch.zeros(len(groups), len(candidates), dtype=torch.float64)
    norm = torch.zeros(len(groups), dtype=torch.float64)

    def measure(i: int, x: Any) -> None:
        x = x.float()
        weights = [lin.weight.detach()[r].float() for lin, r in zip(groups[i].linears, rows[i])]
        refs = [x @ w.T for w in weights]
        norm[i] += sum(r.square().sum().item() for r in refs)
        for j, c in enumerate(columns[i]):
            xq = fake_int8(x / c, dim=-1)
            error[i, j] += sum((xq @ fake_int8(w * c, dim=1).T - r).square().sum().item()
                               for w, r in zip(weights, refs))

    feed(model, groups, batches, measure)
    relative = (error / norm.clamp(min=1e-30)[:, None]).tolist()
    return [candidates[min(range(len(candidates)), key=row.__getitem__)] for row in relative], relative


def calibrate_and_smooth(model: Any, src: Path, calibration: Calibration, alpha: float | str,
                         progress: Progress | None = None, lm_head: bool = False,
                         search_samples: int = SmoothQuant.search_samples) -> dict:
    """Measure activation maxima on the calibration stream (one sample in memory at a time) and
    smooth ``model`` in place; with ``alpha="auto"``, per group (``search_alphas``) on the first
    ``search_samples`` samples (at most all of them). Returns what was chosen (empty for one fixed alpha)."""
    from slipstream.tokenizer import Tokenizer

    groups = smoothing_groups(model, lm_head)
    tokenizer = Tokenizer.from_dir(src)

    def stream(what: str, samples: int):
        with or_null(progress).task(what, total=samples) as bar:
            for ids in dataclasses.replace(calibration, samples=samples).batches(tokenizer):
                yield ids
                bar.advance()

    # The maxima of the model as loaded, with the head's input always among them: one measurement per model serves
    # every alpha, with and without lm_head, and W8A8's smoothing (slipstream.calibration.shared_statistics).
    measured = groups if lm_head else groups + head_group(model)

    def measure() -> dict[str, Any]:
        values = activation_maxima(model, measured, stream(f"calibrating SmoothQuant on {calibration.source}",
                                                            calibration.samples))
        return {g.name: v for g, v in zip(measured, values)}

    by_name, read = shared_statistics(src, "smoothquant-maxima", calibration, measure,
                                      groups=sorted(g.name for g in measured))
    maxima = [by_name[g.name].to(g.linears[0].weight.device) for g in groups]
    shared = {"calibration_statistics": "read" if read else "measured"}
    if alpha != "auto":
        smooth(model, groups, maxima, alpha)
        return shared
    search_samples = min(search_samples, calibration.samples)

    def search() -> dict[str, Any]:
        chosen, relative = search_alphas(model, groups, maxima, stream("SmoothQuant: searching alpha per group",
                                                                       search_samples))
        return {"chosen": chosen, "relative": relative}

    found, _ = shared_statistics(src, "smoothquant-alphas", calibration, search, search_samples=search_samples,
                                 groups=[g.name for g in groups], candidates=list(AUTO_ALPHAS))
    chosen, relative = found["chosen"], found["relative"]
    smooth(model, groups, maxima, chosen)
    candidates = ["none" if a is None else a for a in AUTO_ALPHAS]
    return shared | {"smoothquant_auto": {
        "candidates": candidates, "search_samples": search_samples,
        "groups": {g.name: {"alpha": "none" if a is None else a,
                            "relative_error": dict(zip(map(str, candidates), row))}
                   for g, a, row in zip(groups, chosen, relative)}}}


def apply(src: Path, out: Path, config: SmoothQuant, device: str = "cpu", progress: Progress | None = None) -> dict:
    from slipstream.techniques.hf_io import load_model, save_model

    model = load_model(src, device=device)
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    facts = calibrate_and_smooth(model, src, calibration, config.alpha, progress, config.lm_head,
                                 config.search_samples)
    save_model(model, src, out)
    return {"calibration_tokens": config.samples * config.sequence_length} | facts
