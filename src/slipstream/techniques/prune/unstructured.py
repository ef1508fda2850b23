"""Unstructured and 2:4 semi-structured pruning: zero a fraction of the weights of every linear
layer in the decoder (the embeddings and ``lm_head`` are left alone).

* **magnitude**: per layer, the weights of smallest ``|w|`` go (slipstream's own, no calibration).
* **wanda** (Sun et al., 2023): per output row, the smallest ``|w| * ||x||`` go, ``x`` the layer's
  inputs on calibration text; llm-compressor's ``WandaPruningModifier``.
* **sparsegpt** (Frantar & Alistarh, 2023): prune column by column and correct the remaining weights
  with the inverse Hessian of the inputs; llm-compressor's ``SparseGPTModifier``.

``structure="2:4"`` keeps 2 of every 4 consecutive input weights (50%).

**What it buys here: nothing in size or speed.** The model is saved dense, with zeros in it
(compressed-tensors 0.19 writes no sparse format), and no engine slipstream runs on this CPU
(transformers, CTranslate2, ONNX Runtime, llama.cpp) has kernels that skip zeros; 2:4 needs the
sparse tensor cores of NVIDIA Ampere or newer (vLLM with a 2:4 checkpoint). The variant records its
measured sparsity and says so in its facts; what it shows is the accuracy cost of the sparsity alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from slipstream.calibration import Calibration
from slipstream.errors import InvalidConfig
from slipstream.progress import Progress, or_null
from slipstream.config import TechniqueConfig

Method = Literal["magnitude", "wanda", "sparsegpt"]
Structure = Literal["unstructured", "2:4"]
IGNORE = ("lm_head",)
NO_SPEEDUP = ("saved dense with zeros: no engine slipstream runs on CPU (transformers, CTranslate2, ONNX Runtime, "
              "llama.cpp) skips zero weights, so size and speed are unchanged; this variant shows the accuracy "
              "cost of the sparsity alone")
NO_SPEEDUP_24 = NO_SPEEDUP + ("; 2:4 sparsity is turned into speed only by sparse tensor cores (NVIDIA Ampere or "
                              "newer, e.g. vLLM serving a 2:4 checkpoint), not present here")


@dataclasses.dataclass(frozen=True)
class UnstructuredPrune(TechniqueConfig):
    """Zero ``sparsity`` of each decoder linear layer's weights by magnitude, Wanda or SparseGPT."""

    technique = "prune-unstructured"
    method: Method = "wanda"
    sparsity: float = 0.5
    structure: Structure = "unstructured"
    calibration: str = "wikitext2-valid"
    samples: int = 64
    sequence_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.sparsity < 1:
            raise InvalidConfig(f"prune-unstructured: sparsity must be in (0, 1), got {self.sparsity}")
        if self.structure == "2:4" and self.sparsity != 0.5:
            raise InvalidConfig(f"prune-unstructured: 2:4 means 50% sparsity; got sparsity={self.sparsity}")
        Calibration(self.calibration, self.samples, self.sequence_length)

    def slug(self) -> str:
        amount = "2of4" if self.structure == "2:4" else f"{round(self.sparsity * 100)}"
        return f"prune-{self.method}-{amount}"


def target_layers(model: Any) -> dict[str, Any]:
    """The linear layers that are pruned: every one inside the decoder stack, none outside it."""
    import torch

    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}" and name.split(".")[-1] not in IGNORE}


def magnitude_prune(model: Any, sparsity: float, structure: Structure) -> None:
    import torch

    with torch.no_grad():
        for layer in target_layers(model).values():
            w = layer.weight
            if structure == "2:4":
                groups = w.abs().reshape(w.shape[0], -1, 4)
                drop = torch.topk(groups, 2, dim=-1, largest=False).indices
                mask = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False).reshape(w.shape)
            else:
                k = round(w.numel() * sparsity)
                threshold = torch.kthvalue(w.abs().flatten().float(), k).values if k else -1
                mask = w.abs() > threshold
            w.mul_(mask)


def measure(model: Any, structure: Structure = "unstructured") -> dict[str, Any]:
    """Measured sparsity: over the pruned layers, per layer (min/max) and over all parameters; for
    2:4, the share of groups of 4 that hold at least 2 zeros."""
    import torch

    zeros = total = 0
    per_layer = []
    groups_ok = groups = 0
    for layer in target_layers(model).values():
        w = layer.weight.detach()
        z = int((w == 0).sum())
        zeros, total = zeros + z, total + w.numel()
        per_layer.append(z / w.numel())
        if structure == "2:4" and w.shape[1] % 4 == 0:
            g = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
            groups_ok, groups = groups_ok + int((g >= 2).sum()), groups + g.numel()
    all_params = sum(p.numel() for p in model.parameters())
    all_zeros = sum(int((p.detach() == 0).sum()) for p in model.parameters())
    facts = {"sparsity": round(zeros / max(total, 1), 6), "layers_pruned": len(per_layer),
             "layer_sparsity_min": round(min(per_layer), 6), "layer_sparsity_max": round(max(per_layer), 6),
             "model_sparsity": round(all_zeros / all_params, 6)}
    if structure == "2:4":
        facts["two_four_groups_valid"] = round(groups_ok / max(groups, 1), 6)
    return facts


def _modifier(config: UnstructuredPrune) -> Any:
    ignore = [f"re:.*{name}" for name in IGNORE]
    mask = "2:4" if config.structure == "2:4" else "0:0"
    if config.method == "wanda":
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        return WandaPruningModifier(sparsity=config.sparsity, mask_structure=mask, ignore=ignore)
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    return SparseGPTModifier(sparsity=config.sparsity, mask_structure=mask, ignore=ignore)


def _drop_sparsity_metadata(out: Path) -> None:
    """compressed-tensors may note the sparsity in config.json; the weights are dense, and a
    ``quantization_config`` with no quantization makes other converters (CTranslate2) refuse the model."""
    import json

    path = out / "config.json"
    config = json.loads(path.read_text())
    q = config.get("quantization_config")
    if isinstance(q, dict) and not q.get("config_groups"):
        config.pop("quantization_config")
        path.write_text(json.dumps(config, indent=2))


def apply(src: Path, out: Path, config: UnstructuredPrune, device: str = "cpu",
          progress: Progress | None = None) -> dict:
    from slipstream.techniques.hf_io import load_model, save_model

    progress = or_null(progress)
    model = load_model(src, device=device)
    facts: dict[str, Any] = {}
    if config.method == "magnitude":
        with progress.task(f"magnitude pruning to {config.slug()}"):
            magnitude_prune(model, config.sparsity, config.structure)
        with progress.task("saving the pruned model"):
            save_model(model, src, out)
    else:
        from slipstream.techniques.quantize import llmc

        llmc.require_llmcompressor(f"{config.method} pruning")
        calibration = Calibration(config.calibration, config.samples, config.sequence_length)
        facts |= llmc.run(src, out, [_modifier(config)], label=f"{config.method} pruning {config.slug()}",
                          calibration=calibration, device=device, progress=progress, model=model)
        _drop_sparsity_metadata(out)
    facts |= measure(model, config.structure)
    facts["requested_sparsity"] = config.sparsity
    facts["speedup_engines"] = []  # engines here that turn this sparsity into speed or size: none
    facts["engines"] = NO_SPEEDUP_24 if config.structure == "2:4" else NO_SPEEDUP
    return facts
