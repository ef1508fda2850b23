"""Prune-then-distill recipes, composable with quantization, as candidates for the automatic search.

A recipe is a list of ``(technique, options)`` steps that :func:`slipstream.pipeline.build` applies in
order (each step's variant is kept, so an interrupted recipe resumes where it stopped; a killed
distillation resumes from its last checkpoint).

``PRUNING_RECIPES`` rows are ``(steps, expected decode speed-up, size ratio, pass probability,
minutes)``, speed-up and size relative to the original model: priors for the search. Measured on
SmolLM2-135M-Instruct (BENCHMARKS.md): 20% of the layers and 25% of the MLP channels out gives 72% of
the size and 1.36x the decode speed on the same engine and precision; the MLP-only speed-up is an
estimate from the shapes. Pass probabilities are low because the perplexity after 30 minutes of
distillation was still 2.4x the original's (48.8 vs 20.0); minutes are wall-clock on 2 CPU cores.
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

# Priors relative to the original model: the pruning's own gain (from the shapes: 72% and 85% of the
# parameters) times the CTranslate2 conversion's (the search catalog's priors for CTranslate2 int8 and float32:
# 4.0x and 0.26 of the size; 1.2x and the same size).
_PRUNED_SPEED, _PRUNED_SIZE = 1.35, 0.72
_MLP_SPEED, _MLP_SIZE = 1.12, 0.85
PRUNING_RECIPES: tuple[tuple[tuple[Step, ...], float, float, float, float], ...] = (
    (PRUNE_DISTILL_INT8, _PRUNED_SPEED * 4.0, _PRUNED_SIZE * 0.26, 0.05, 35.0),
    ((STRUCTURED, DISTILL_30M, ("ctranslate2", {"quantization": "float32"})), _PRUNED_SPEED * 1.2, _PRUNED_SIZE,
     0.05, 35.0),
    ((MLP_ONLY, DISTILL_30M, ("ctranslate2", {"quantization": "int8"})), _MLP_SPEED * 4.0, _MLP_SIZE * 0.26, 0.2,
     35.0),
)
