"""What the llm-compressor techniques (RTN, AWQ, GPTQ, W8A8, FP8) share.

Each technique builds llm-compressor modifiers from its frozen config and hands them to :func:`run`,
which loads the model, streams calibration samples from a :class:`~slipstream.calibration.Calibration`
into llm-compressor's ``oneshot``, and saves a compressed-tensors checkpoint: a Hugging Face
directory that transformers (through compressed-tensors) and vLLM both load.

Rules kept here, so every technique follows them:

* **Group size per layer.** Group-wise quantization needs the group size to divide a layer's input
  width. A layer it does not divide gets the largest power of two below it that does (SmolLM2's
  576-wide inputs take 64 when 128 is asked for; its 1536-wide ``down_proj`` keeps 128). A layer no
  power of two from 16 up divides stays in full precision. The plan is recorded in the variant's
  facts (``group_sizes``, ``unquantized``), so a table can say what "group 128" meant.
* **The output projection stays in full precision** (``lm_head``; tied to the embeddings in most
  small models), as llm-compressor's own recipes and vLLM's kernels expect.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any, Iterator

from slipstream.calibration import Calibration
from slipstream.errors import Unsupported
from slipstream.extras import require
from slipstream.progress import Progress, or_null

EXTRA = "llmcompressor"
MIN_GROUP = 16
IGNORE = ("lm_head",)


def require_llmcompressor(purpose: str) -> Any:
    return require("llmcompressor", EXTRA, purpose)


# --- group sizes ----------------------------------------------------------------------------------

def group_for(width: int, group_size: int | None) -> int | None:
    """The group size a layer of input ``width`` gets when ``group_size`` is asked for: ``group_size``
    if it divides ``width``, else the largest power of two below it that does; 0 when none from
    ``MIN_GROUP`` up does (the layer then stays in full precision). ``None`` means per channel."""
    if group_size is None or width % group_size == 0:
        return group_size
    g = 1 << (group_size.bit_length() - 1)
    while g >= MIN_GROUP:
        if width % g == 0:
            return g
        g //= 2
    return 0


def plan_groups(model: Any, group_size: int | None) -> dict[str, int | None]:
    """Module name -> the group size it is quantized with (0: left in full precision)."""
    import torch

    return {name: group_for(module.in_features, group_size) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] not in IGNORE}


def scheme_groups(plan: dict[str, int | None], weights: dict, activations: dict | None = None) -> dict[str, Any]:
    """compressed-tensors ``config_groups`` for ``plan``: one group per group size. Targets are
    ``Linear`` when one size fits every layer; otherwise a regex per projection name (``q_proj``...),
    or per module where layers sharing a name differ."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    by_size: dict[int | None, list[str]] = {}
    for name, g in plan.items():
        if g != 0:
            by_size.setdefault(g, []).append(name)
    if not by_size:
        raise Unsupported("no linear layer can be quantized with this group size")

    def scheme(targets: list[str], g: int | None) -> Any:
        w = dict(weights) | ({"strategy": "group", "group_size": g} if g else {})
        return QuantizationScheme(targets=targets, weights=QuantizationArgs(**w),
                                  input_activations=QuantizationArgs(**activations) if activations else None)

    if len(by_size) == 1 and 0 not in plan.values():
        ((g, _),) = by_size.items()
        return {"group_0": scheme(["Linear"], g)}
    suffix_sizes: dict[str, set] = {}
    for name, g in plan.items():
        suffix_sizes.setdefault(name.split(".")[-1], set()).add(g)
    groups = {}
    for i, (g, names) in enumerate(sorted(by_size.items(), key=lambda kv: -(kv[0] or 1 << 30))):
        targets: list[str] = []
        for suffix in sorted({n.split(".")[-1] for n in names}):
            if len(suffix_sizes[suffix]) == 1:
                targets.append(f"re:.*\\.{re.escape(suffix)}$")
            else:
                targets += [f"re:^{re.escape(n)}$" for n in names if n.split(".")[-1] == suffix]
        groups[f"group_{i}"] = scheme(targets, g)
    return groups


def plan_facts(plan: dict[str, int | None]) -> dict[str, Any]:
    sizes: dict[str, int] = {}
    for g in plan.values():
        if g != 0:
            key = "channel" if g is None else str(g)
            sizes[key] = sizes.get(key, 0) + 1
    return {"group_sizes": sizes, "unquantized": sorted(n for n, g in plan.items() if g == 0)}


# --- calibration ----------------------------------------------------------------------------------

def calibration_loader(src: Path, calibration: Calibration, on_sample=lambda: None) -> Any:
    """A DataLoader that produces ``calibration.samples`` sequences one at a time from the text
    stream: nothing but the current sample is held, whatever the size of the source. Each sample
    starts with the model's BOS token when its tokenizer adds one (as evaluation text does)."""
    torch = require("torch", "core")
    from torch.utils.data import DataLoader, IterableDataset

    from slipstream.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(src)

    class Stream(IterableDataset):
        def __iter__(self) -> Iterator[dict]:
            for ids in calibration.batches(tokenizer, bos=True):
                t = torch.tensor(ids, dtype=torch.long)
                on_sample()
                yield {"input_ids": t, "attention_mask": torch.ones_like(t)}

        def __len__(self) -> int:
            return calibration.samples

    return DataLoader(Stream(), batch_size=1)


# --- CPU workarounds ------------------------------------------------------------------------------

@contextlib.contextmanager
def cpu_workarounds() -> Iterator[None]:
    """Patches, for the duration of one run, where llm-compressor 0.14 assumes an accelerator.

    AWQ pins its cached activations before its grid search (``IntermediatesCache.pin_memory``);
    on a machine without an accelerator ``Tensor.pin_memory()`` raises "Cannot access accelerator
    device". Pinning only speeds host-to-device copies, so without an accelerator it is skipped.
    The patch is on the class attribute, undone on exit; site-packages is never changed.
    """
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """llm-compressor logs every layer through loguru and draws a tqdm bar per layer and grid
    search; slipstream draws its own progress. Both are silenced for one run, then restored."""
    from loguru import logger
    from tqdm import std

    init = std.tqdm.__init__

    def silent(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    std.tqdm.__init__ = silent  # type: ignore[method-assign]
    logger.disable("llmcompressor")
    logger.disable("compressed_tensors")
    try:
        yield
    finally:
        logger.enable("llmcompressor")
        logger.enable("compressed_tensors")
        std.tqdm.__init__ = init  # type: ignore[method-assign]


# --- the run --------------------------------------------------------------------------------------

def run(
    src: Path,
    out: Path,
    modifiers: list[Any],
    *,
    label: str,
    calibration: Calibration | None,
    device: str,
    progress: Progress | None,
    model: Any = None,
) -> dict[str, Any]:
    """Apply ``modifiers`` with llm-compressor's ``oneshot`` and save a compressed-tensors checkpoint
    in ``out``. Returns facts for the manifest (calibration tokens, seconds spent calibrating)."""
    require_llmcompressor(label)
    from llmcompressor import oneshot

    from slipstream.techniques.hf_io import load_model, save_model

    progress = or_null(progress)
    model = model if model is not None else load_model(src, device=device)
    facts: dict[str, Any] = {}
    start = time.perf_counter()
    with cpu_workarounds(), quiet():
        if calibration is None:
            with progress.task(label):
                oneshot(model=model, tokenizer=str(src), recipe=modifiers)
        else:
            with progress.task(f"{label} on {calibration.source}", total=calibration.samples) as bar:
                loader = calibration_loader(src, calibration, bar.advance)
                oneshot(model=model, tokenizer=str(src), recipe=modifiers, dataset=loader,
                        num_calibration_samples=calibration.samples, max_seq_length=calibration.sequence_length,
                        shuffle_calibration_samples=False, sequential_offload_device="cpu")
            facts["calibration"] = {"source": calibration.source, "samples": calibration.samples,
                                    "sequence_length": calibration.sequence_length}
        facts["oneshot_seconds"] = round(time.perf_counter() - start, 3)
        with progress.task("saving compressed-tensors checkpoint"):
            save_model(model, src, out)
    facts["llmcompressor"] = _version("llmcompressor")
    facts["compressed_tensors"] = _version("compressed-tensors")
    return facts


def _version(dist: str) -> str | None:
    from slipstream.extras import version_of

    return version_of(dist)
