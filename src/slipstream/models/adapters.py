"""LoRA adapters in the store: a PEFT LoRA directory checked against its base, and merged into it.

An adapter is stored beside its base as its own entry (``kind="adapter"``, ``format="peft-lora"``, its
parent the base), holding ``adapter_config.json`` and ``adapter_model.safetensors`` as PEFT wrote them.
Before it is stored it is checked against the base, from the safetensors headers alone (no tensor loaded):
every LoRA pair must update a weight the base has, with shapes that fit it (A is ``r x in``, B is
``out x r``), its rank within a limit. Pickled adapters (``adapter_model.bin``) are refused, as pickled
models are. What is not a plain LoRA on linear layers (DoRA, embedding LoRA, ``modules_to_save``, biases,
GPT-2's transposed Conv1D layout) is refused with one line naming it, not half-supported.

:func:`merge_adapter` folds an adapter into its base (``W + (alpha / r) B A``, or ``alpha / sqrt(r)`` with
rsLoRA) and stores the result as an ordinary model variant, so any technique or search runs on the
fine-tune.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipstream.errors import InvalidConfig, InvalidModel, NotFound, UnsafeModel
from slipstream.models.checks import PICKLE_SUFFIXES, safetensors_header
from slipstream.progress import Progress, or_null
from slipstream.store import Store, Variant, check_name
from slipstream.store.manifest import MANIFEST

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
MAX_RANK = 256
_PAIR = re.compile(r"^(?P<module>.+)\.lora_(?P<half>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
# PEFT saves keys under the wrapper it trained with; the base's own keys start after it
_PREFIXES = ("base_model.model.",)


@dataclass
class AdapterInfo:
    path: Path
    config: dict[str, Any]
    rank: int  # the largest rank of its pairs
    alpha: float
    rslora: bool
    # module (as the base names it, e.g. model.layers.0.self_attn.q_proj) -> (A shape, B shape, A key, B key)
    pairs: dict[str, tuple[list[int], list[int], str, str]] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(math.prod(a) + math.prod(b) for a, b, _, _ in self.pairs.values())

    def scale(self, rank: int) -> float:
        return self.alpha / (math.sqrt(rank) if self.rslora else rank)

    def summary(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "rslora": self.rslora, "modules": len(self.pairs),
                "target_modules": sorted({m.rsplit(".", 1)[-1] for m in self.pairs})}


def _base_key(module: str) -> str:
    for prefix in _PREFIXES:
        if module.startswith(prefix):
            return module[len(prefix):]
    return module


def inspect_adapter(path: Path | str) -> AdapterInfo:
    """A PEFT LoRA directory's config and pairs, refusing what slipstream does not take (named)."""
    path = Path(path)
    if not path.is_dir():
        raise NotFound(f"{path}: no such directory (expected a PEFT LoRA directory)")
    if not (path / CONFIG).exists():
        raise InvalidModel(f"{path}: not a PEFT adapter (no {CONFIG})")
    if not (path / WEIGHTS).exists():
        pickled = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickled:
            raise UnsafeModel(f"{path}: the adapter's weights are pickled ({', '.join(pickled)}), which can run "
                              "code when loaded; save it with safetensors (PEFT's default)")
        raise InvalidModel(f"{path}: no {WEIGHTS}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{path / CONFIG}: not JSON ({exc})") from None
    if config.get("peft_type") != "LORA":
        raise InvalidModel(f"{path}: peft_type {config.get('peft_type')!r}; slipstream takes LoRA adapters (LORA)")
    for key, why in (("use_dora", "DoRA scales each column by a learned magnitude"),
                     ("modules_to_save", "it replaces whole modules besides its low-rank updates"),
                     ("fan_in_fan_out", "its layers store weights transposed (GPT-2's Conv1D)"),
                     ("alpha_pattern", "its modules have alphas of their own")):
        if config.get(key):
            raise InvalidModel(f"{path}: {key} is set ({why}); slipstream takes plain LoRA on linear layers")
    if config.get("bias", "none") != "none":
        raise InvalidModel(f"{path}: bias={config['bias']!r}: the adapter trains biases; slipstream takes bias='none'")
    pairs: dict[str, dict[str, Any]] = {}
    for key, meta in safetensors_header(path / WEIGHTS).items():
        if key == "__metadata__":
            continue
        if "lora_embedding" in key or "lora_magnitude" in key:
            raise InvalidModel(f"{path}: {key}: embedding LoRA and DoRA magnitudes are not taken")
        m = _PAIR.match(key)
        if m is None:
            raise InvalidModel(f"{path}: {key} is not a LoRA A or B weight")
        pairs.setdefault(_base_key(m["module"]), {})[m["half"]] = (meta["shape"], key)
    if not pairs:
        raise InvalidModel(f"{path}: {WEIGHTS} holds no LoRA weights")
    info = AdapterInfo(path, config, rank=0, alpha=float(config.get("lora_alpha", 8)),
                       rslora=bool(config.get("use_rslora")))
    for module, halves in sorted(pairs.items()):
        if set(halves) != {"A", "B"}:
            raise InvalidModel(f"{path}: {module} has lora_{''.join(halves)} without its other half")
        (a, a_key), (b, b_key) = halves["A"], halves["B"]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise InvalidModel(f"{path}: {module}: lora_A {a} and lora_B {b} do not make a rank-r update")
        info.pairs[module] = (a, b, a_key, b_key)
        info.rank = max(info.rank, a[0])
    return info


def base_shapes(base: Variant) -> dict[str, list[int]]:
    if base.format != "hf":
        raise InvalidConfig(f"{base.name!r} is {base.format!r}: an adapter's base is a transformers model (hf); "
                            "adapt the model before exporting it, or merge the adapter and optimize the result")
    shapes: dict[str, list[int]] = {}
    for f in sorted(base.path.glob("*.safetensors")):
        shapes.update({k: v["shape"] for k, v in safetensors_header(f).items() if k != "__metadata__"})
    return shapes


def check_against_base(info: AdapterInfo, base: Variant, max_rank: int = MAX_RANK) -> None:
    """Refuse, in one line naming it, an adapter that does not fit ``base``."""
    if info.rank > max_rank:
        raise InvalidModel(f"{info.path}: rank {info.rank} is above the limit of {max_rank} (--max-rank)")
    shapes = base_shapes(base)
    for module, (a, b, _, _) in info.pairs.items():
        weight = shapes.get(f"{module}.weight")
        if weight is None:
            raise InvalidModel(f"{info.path}: target module {module} is not in {base.name!r} "
                               f"({base.architecture}): an adapter for another architecture?")
        if len(weight) != 2 or [b[0], a[1]] != list(weight):
            raise InvalidModel(f"{info.path}: {module}: the adapter updates a {b[0]}x{a[1]} weight, "
                               f"{base.name!r} has {'x'.join(map(str, weight))}: trained on another base size?")


def import_adapter(source: Path | str, base: str, name: str | None = None, *, store: Store | None = None,
                   max_rank: int = MAX_RANK, progress: Progress | None = None) -> Variant:
    """Check a PEFT LoRA directory against ``base`` (a model in the store) and store it beside the base."""
    store = store or Store()
    info = inspect_adapter(source)
    base_variant = store.get(base)
    check_against_base(info, base_variant, max_rank)
    name = check_name(name or f"{base}-lora-{Path(source).resolve().name}")
    with store.stage(name) as staged:
        with or_null(progress).task(f"importing adapter {name}", total=None):
            for f in (CONFIG, WEIGHTS):
                shutil.copy2(info.path / f, staged / f)
        return store.commit(staged, name=name, kind="adapter", format="peft-lora",
                            architecture=base_variant.architecture, parameters=info.parameters,
                            source=str(Path(source).resolve()), parent=base,
                            technique={"technique": "lora", **info.summary()})


def lineage(store: Store, variant: str) -> list[str]:
    """``variant`` and its ancestors in the store, nearest first."""
    chain, parent = [variant], store.get(variant).parent
    while parent and store.exists(parent):
        chain.append(parent)
        parent = store.get(parent).parent
    return chain


def adapter_for(store: Store, adapter: str, variant: str) -> Path:
    """The adapter's directory, if it can run over ``variant``: its base is the variant or an ancestor (an
    adapter trained on the float model runs over its quantized variants); else a one-line refusal."""
    if not store.exists(adapter):
        raise InvalidConfig(f"no adapter {adapter!r} in the store (slipstream adapters import DIR --base MODEL)")
    entry = store.get(adapter)
    if entry.kind != "adapter":
        raise InvalidConfig(f"{adapter!r} is a {entry.kind}, not an adapter")
    chain = lineage(store, variant)
    if entry.parent not in chain:
        raise InvalidConfig(f"adapter {adapter!r} was trained on {entry.parent!r}; {variant!r} is made from "
                            f"{' <- '.join(chain)}")
    return entry.path


def adapters_of(store: Store, base: str | None = None) -> list[Variant]:
    return [v for v in store.list(kind="adapter") if base is None or v.parent == base]


def merge_adapter(adapter: str, name: str | None = None, *, store: Store | None = None,
                  progress: Progress | None = None) -> Variant:
    """The base with the adapter folded into its weights, stored as a model variant of the base."""
    import torch
    from safetensors.torch import load_file, save_file

    store = store or Store()
    entry = store.get(adapter)
    if entry.kind != "adapter":
        raise InvalidConfig(f"{adapter!r} is a {entry.kind}, not an adapter (slipstream adapters list)")
    base = store.get(entry.parent)
    info = inspect_adapter(entry.path)
    check_against_base(info, base, max_rank=max(info.rank, MAX_RANK))
    name = check_name(name or f"{adapter}-merged")
    lora = load_file(str(entry.path / WEIGHTS))
    with store.stage(name) as staged:
        files = sorted(base.path.glob("*.safetensors"))
        with or_null(progress).task(f"merging {adapter} into {base.name}", total=len(files)) as task:
            for f in base.path.iterdir():
                if f.is_file() and f.suffix != ".safetensors" and f.name not in (MANIFEST, "README.md"):
                    shutil.copy2(f, staged / f.name)
            for f in files:
                tensors = load_file(str(f))
                for module, (a_shape, _, a_key, b_key) in info.pairs.items():
                    key = f"{module}.weight"
                    if key in tensors:
                        w = tensors[key]
                        delta = (lora[b_key].to(torch.float32) @ lora[a_key].to(torch.float32)) * info.scale(a_shape[0])
                        tensors[key] = (w.to(torch.float32) + delta).to(w.dtype)
                save_file(tensors, str(staged / f.name), metadata={"format": "pt"})
                task.advance()
        return store.commit(staged, name=name, kind="variant", format="hf", architecture=base.architecture,
                            parameters=base.parameters, source=f"lora {adapter} merged into {base.name}",
                            parent=base.name, technique={"technique": "merge-lora", "adapter": adapter,
                                                         "adapter_sha256": entry.sha256, **info.summary()})
