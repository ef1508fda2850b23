"""Prune-then-distill recipes, composable with quantization.

A recipe is a list of ``(technique, options)`` steps that :func:`slipstream.pipeline.build` applies in
order (each step's variant is kept, so an interrupted recipe resumes where it stopped; a killed
distillation resumes from its last checkpoint). The automatic search's built-in candidates, these steps
followed by a CTranslate2 conversion, are data in ``slipstream/search/recipes.json``, with their priors and
the evidence behind them (BENCHMARKS.md#pruning-and-distillation).
"""

from __future__ import annotations

Step = tuple[str, dict]

# 20% of decoder layers and 25% of MLP channels out, then 30 minutes of distillation on WikiText-2 valid.
STRUCTURED = ("prune-structured", {"layers": 0.2, "mlp": 0.25, "samples": 8})
DISTILL_30M = ("distill", {"steps": 60, "minutes": 30.0, "batch_size": 2, "accumulation": 1,
                           "sequence_length": 128, "learning_rate": 3e-4, "warmup": 3, "temperature": 1.0,
                           "checkpoint_every": 5})
MLP_ONLY = ("prune-structured", {"layers": 0.0, "mlp": 0.25, "samples": 8})

PRUNE_THEN_DISTILL: tuple[Step, ...] = (STRUCTURED, DISTILL_30M)
PRUNE_DISTILL_INT8: tuple[Step, ...] = (STRUCTURED, DISTILL_30M, ("ctranslate2", {"quantization": "int8"}))
