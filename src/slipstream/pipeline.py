"""``optimize``: apply one technique to a model in the store and register the variant it makes.

The sequence is fixed and readable: resolve the parent, build and check the config, stage,
run the technique, write the manifest, commit atomically.
"""

from __future__ import annotations

import json

import time
from typing import Any

from slipstream.benchmark.memory import peak_rss_bytes, reset_peak_rss
from slipstream.devices import resolve_device
from slipstream.errors import Unsupported
from slipstream.exporters.readme import write as write_readme
from slipstream.extras import library_versions
from slipstream.models.tasks import require_task, task_of
from slipstream.progress import Progress
from slipstream.store import Store, Variant, check_name
from slipstream.store.manifest import verify
from slipstream.config import TechniqueConfig
from slipstream.techniques.registry import make_config, spec_for


def optimize(
    model: str,
    technique: TechniqueConfig | str,
    options: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    device: str | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> Variant:
    """Make a variant of ``model`` with ``technique`` (a config, or a technique name plus options).

    >>> optimize("smollm2-135m", CTranslate2(quantization="int8"))  # doctest: +SKIP
    """
    store = store or Store()
    if name is not None:
        check_name(name)  # before any work: a name given by a user must not leave the store
    config = make_config(technique, options) if isinstance(technique, str) else technique
    spec = spec_for(config)
    parent = store.get(model)
    verify(parent.path)  # a parent changed on disk would pass its damage on to the variant
    if parent.format not in spec.input_formats:
        raise Unsupported(
            f"technique {spec.name!r} takes a {' or '.join(spec.input_formats)} model, "
            f"but {parent.name!r} is {parent.format!r}"
        )
    task = task_of(parent)
    require_task(task, spec.tasks, f"technique {spec.name!r}", parent.name)
    target = resolve_device(device)
    run = spec.load()  # imports the backend; a missing extra fails here with its install hint
    name = name or f"{parent.name}-{config.slug()}"
    with store.stage(name) as staged:
        separate = reset_peak_rss()  # the peak from here on is this technique's own
        start = time.perf_counter()
        facts = run(parent.path, staged, config, device=target, progress=progress) or {}
        facts |= {"seconds": round(time.perf_counter() - start, 3),
                  "peak_rss_bytes": peak_rss_bytes() if separate else None,
                  "process_peak_rss_bytes": peak_rss_bytes()}
        variant = store.commit(
            staged,
            name=name,
            kind="variant",
            format=spec.output_format,
            architecture=parent.architecture,
            parameters=facts.get("parameters", parent.parameters),  # pruning changes it
            source=f"{spec.name} of {parent.name}",
            parent=parent.name,
            technique=config.to_dict(),
            device=target,
            versions=library_versions(*(spec.extra,) if spec.extra else ()),
            extra={"facts": facts, "task": task},
        )
    write_readme(store, variant.name)  # how to run it with the engine's own tools, for whoever copies it
    return variant


def build(
    model: str,
    steps: list[TechniqueConfig],
    *,
    device: str | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> Variant:
    """Apply ``steps`` in order (a recipe), reusing any step already in the store.

    Each step's variant is named ``<input>-<slug>``, so a recipe run twice, or interrupted and run
    again, finds its finished steps and does only what is left.
    """
    store = store or Store()
    current = store.get(model)
    for step in steps:
        name = f"{current.name}-{step.slug()}"
        if store.exists(name):
            existing = store.get(name)
            # compared as stored (JSON): a tuple option reads back as a list
            if existing.technique != json.loads(json.dumps(step.to_dict())) or existing.parent != current.name:
                raise Unsupported(f"{name!r} exists in the store but was made differently; remove it or rename")
            current = existing
            continue
        current = optimize(current.name, step, name=name, device=device, store=store, progress=progress)
    return current
