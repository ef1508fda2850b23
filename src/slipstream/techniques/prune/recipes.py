"""Prune-then-distill recipes, composable with quantization, as candidates for the automatic search.

A recipe is a list of ``(technique, options)`` steps that :func:`slipstream.pipeline.build` applies in
order (each step's variant is kept, so an interrupted recipe resumes where it stopped; a killed
distillation resumes from its last checkpoint).

``PRUNING_RECIPES`` rows are ``(steps, expected decode speed-up, size ratio, pass probability,
minutes)``: priors for the search. Size ratios are measured on SmolLM2-135M-Instruct (BENCHMARKS.md);
speed-ups are estimates from the shapes (the side-by-side measurement on the loaded machine was noise);
pass probabilities are low because the measured perplexity after 30 minutes of distillation was still
2.4x the original's (43 vs 18); minutes are wall-clock on 2 shared CPU cores.
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

PRUNING_RECIPES: tuple[tuple[tuple[Step, ...], float, float, float, float], ...] = (
    (PRUNE_DISTILL_INT8, 1.35, 0.72, 0.05, 35.0),
    ((STRUCTURED, DISTILL_30M, ("ctranslate2", {"quantization": "float32"})), 1.35, 0.72, 0.05, 35.0),
    ((MLP_ONLY, DISTILL_30M, ("ctranslate2", {"quantization": "int8"})), 1.12, 0.85, 0.2, 35.0),
)
