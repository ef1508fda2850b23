"""GPTQ (Frantar et al., 2023) onto the int8 grid that CTranslate2's int8 rounds each weight row to.

CTranslate2 quantizes a linear's weights when it converts a model, one symmetric scale per output row
(``max|w| / 127``, round to nearest), and an engine cannot be told to do otherwise. GPTQ rounds the
same grid better: it rounds one input column at a time and moves the error it made onto the columns
not yet rounded, weighted by the inverse of the layer's input Hessian ``H = X^T X`` measured on
calibration text, so the layer's outputs on that text stay closest to the float ones. This technique
keeps each row's scale at CTranslate2's (the row's largest weight stays the row's largest code, 127)
and writes the rounded weights back in float: ``ctranslate2 -q int8`` afterwards recovers exactly
the same codes, so the int8 model holds GPTQ's weights instead of its own rounding. Where GPTQ's
updates moved a row's largest weight below code 127 (CTranslate2 would then derive a smaller scale
and round again), that weight is pinned back to its grid point; a row that GPTQ leaves no closer to
the float outputs than rounding to nearest is rounded to nearest (their count is in the facts).

Every linear of the decoder is rounded, each on the Hessian of its own input in the float model (one
calibration pass, not layer after layer as GPTQ's reference does: at 8 bits the inputs barely move),
and the output head too when it is not tied to the embedding (a tied head is the embedding table,
whose lookups want rounding to nearest; ``smoothquant -o lm_head=true`` unties it).

What it buys: the layers' output error on calibration text falls severalfold and CTranslate2 int8's KL
with it, at no cost in speed (the same int8 weights). After ``smoothquant -o alpha=auto -o lm_head=true``
it is what takes CTranslate2 int8 within 1% perplexity on Gemma-3-270m, which smoothing alone does not
(figures: docs/techniques.md#ctranslate2-smoothquant-and-int8-rows, BENCHMARKS.md#quantization).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from slipstream.calibration import Calibration
from slipstream.errors import InvalidConfig
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig

LEVELS = 127  # CTranslate2's int8: codes -127..127, scale max|w| / 127 per row


@dataclasses.dataclass(frozen=True)
class Int8Rows(TechniqueConfig):
    """GPTQ onto CTranslate2 int8's per-row grid; the model stays float (convert with ctranslate2 int8)."""

    technique = "int8-rows"
    dampening: float = 0.01  # added to H's diagonal, as a fraction of its mean
    block_size: int = 128  # columns rounded before the rest are updated at once
    calibration: str = "wikitext2-valid"
    samples: int = 64
    sequence_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.dampening <= 1.0:
            raise InvalidConfig(f"int8-rows: dampening must be in (0, 1], got {self.dampening}")
        if self.block_size < 1:
            raise InvalidConfig(f"int8-rows: block_size must be >= 1, got {self.block_size}")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        return "gptq-rows"

    def stand_in(self) -> None:
        return None  # new values on the grid CTranslate2 would round to anyway: the same int8 model, as fast


def gptq_rows(weight: Any, hessian: Any, dampening: float = 0.01, block_size: int = 128,
              chunk_rows: int = 16384) -> tuple[Any, dict[str, float]]:
    """GPTQ of ``weight`` (rows x columns) on CTranslate2's per-row int8 grid, given its input's
    ``hessian`` (columns x columns). Returns the rounded weights in float, every row on its grid with
    its largest weight at code 127 so that CTranslate2 derives the same scale; and figures: how many
    rows were left rounded to nearest because that was closer for them, and the output error
    (:func:`output_error`) of rounding to nearest and of the result. Rows are independent (the
    Hessian is shared), so they are done ``chunk_rows`` at a time to bound memory."""
    import torch

    from slipstream.techniques.quantize.int8_sensitivity import fake_int8

    h = hessian.double().clone()
    dead = h.diagonal() == 0  # an input channel that was always zero: rounded to nearest, nothing moved
    h[dead, dead] = 1.0
    h.diagonal().add_(dampening * h.diagonal().mean())
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    out = torch.empty_like(weight, dtype=torch.float32)
    figures = {"nearest_rows": 0, "error_rtn": 0.0, "error_gptq": 0.0}
    for r0 in range(0, weight.shape[0], chunk_rows):
        original = weight[r0 : r0 + chunk_rows].float()
        w = original.clone()
        scale = original.abs().amax(1).clamp(min=1e-30) / LEVELS
        codes = torch.empty_like(w)
        for c0 in range(0, w.shape[1], block_size):
            c1 = min(c0 + block_size, w.shape[1])
            block, inv = w[:, c0:c1].clone(), inverse[c0:c1, c0:c1]
            errors = torch.empty_like(block)
            for i in range(c1 - c0):
                q = (block[:, i] / scale).round().clamp(-LEVELS, LEVELS)
                codes[:, c0 + i] = q
                err = (block[:, i] - q * scale) / inv[i, i]
                block[:, i:] -= err[:, None] * inv[i, i:][None, :]
                errors[:, i] = err
            w[:, c1:] -= errors @ inverse[c0:c1, c1:]
        rounded = codes * scale[:, None]
        lost = (codes.abs().amax(1) < LEVELS).nonzero().squeeze(1)
        if len(lost):  # GPTQ moved the row's largest weight below code 127: pin it back to its grid point
            top = original.abs().argmax(1)[lost]
            rounded[lost, top] = original[lost, top]
        # a row keeps GPTQ's rounding only where it makes the row's outputs closer than rounding to nearest
        nearest = fake_int8(original, dim=1)  # CTranslate2's own rounding
        mine, theirs = row_errors(rounded - original, hessian), row_errors(nearest - original, hessian)
        worse = mine >= theirs
        rounded[worse] = nearest[worse]
        figures["nearest_rows"] += int(worse.sum())
        figures["error_rtn"] += float(theirs.sum())
        figures["error_gptq"] += float(torch.minimum(mine, theirs).sum())
        out[r0 : r0 + chunk_rows] = rounded
    return out.to(weight.dtype), figures


def row_errors(delta: Any, hessian: Any) -> Any:
    """Per row of weight error ``D``, its squared output error per token on inputs whose
    ``X^T X / tokens`` is ``hessian``: the diagonal of ``D H D^T``."""
    return ((delta @ hessian) * delta).sum(1)


def output_error(delta: Any, hessian: Any) -> float:
    """``tr(D H D^T)``: the squared output error per token, summed over rows."""
    return float(row_errors(delta, hessian).sum())


def targets(model: Any) -> dict[str, Any]:
    """Name -> nn.Linear to round: every linear of the decoder, and the head unless it is tied."""
    import torch

    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and (m is not head or not tied)}


def hessians(model: Any, linears: dict[str, Any], batches, on_sample=lambda: None) -> dict[str, Any]:
    """``X^T X / tokens`` of each linear's input over the calibration stream (float32, one sample in
    memory at a time). Linears that read the same tensor (q/k/v, gate/up) share one accumulation."""
    import torch

    sums: dict[str, Any] = {}
    owner: dict[str, str] = {}  # linear -> the first linear that read the same input
    inputs: dict[int, tuple[Any, str]] = {}  # this pass: id -> (tensor, first reader); held so ids stay unique

    def hook(name: str):
        def accumulate(_m, args):
            x = args[0]
            first = inputs.setdefault(id(x), (x, name))[1]
            owner[name] = first
            if first == name:
                x = x.detach().reshape(-1, x.shape[-1]).float()
                sums[name] = sums[name] + x.T @ x if name in sums else x.T @ x
        return accumulate

    tokens = 0
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linears.items()]
    try:
        with torch.inference_mode():
            for ids in batches:
                model(input_ids=torch.tensor([ids], device=model.device))
                inputs.clear()
                tokens += len(ids)
                on_sample()
    finally:
        for h in handles:
            h.remove()
    shared = {n: s / tokens for n, s in sums.items()}
    return {n: shared[owner[n]] for n in linears if n in owner}


def apply(src: Path, out: Path, config: Int8Rows, device: str = "cpu", progress: Progress | None = None) -> dict:
    import time

    import torch

    from slipstream.tokenizer import Tokenizer
    from slipstream.techniques.hf_io import load_model, save_model

    model = load_model(src, device=device)
    linears = targets(model)
    calibration = Calibration(config.calibration, config.samples, config.sequence_length)
    start = time.perf_counter()
    with or_null(progress).task(f"int8-rows: input Hessians on {calibration.source}", total=calibration.samples) as bar:
        h = hessians(model, linears, calibration.batches(Tokenizer.from_dir(src), bos=True), on_sample=bar.advance)
    totals = {"nearest_rows": 0, "error_rtn": 0.0, "error_gptq": 0.0}
    with torch.no_grad(), or_null(progress).task("int8-rows: GPTQ per linear", total=len(h)) as bar:
        for name, hessian in h.items():
            lin = linears[name]
            rounded, figures = gptq_rows(lin.weight.detach(), hessian, config.dampening, config.block_size)
            lin.weight.copy_(rounded)
            totals = {k: totals[k] + figures[k] for k in totals}
            bar.advance()
    save_model(model, src, out)
    return {"calibration_tokens": config.samples * config.sequence_length,
            "int8_rows": {"linears": len(h), "seconds": round(time.perf_counter() - start, 1),
                          "rows": sum(linears[n].weight.shape[0] for n in h),
                          "rows_left_to_nearest": totals["nearest_rows"],
                          # summed over linears: tr(D H D^T), the squared output error per calibration token
                          "output_error_rtn": totals["error_rtn"], "output_error_gptq": totals["error_gptq"],
                          "head": any(m is model.get_output_embeddings() for m in linears.values())}}
