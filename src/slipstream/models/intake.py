"""``slipstream models import SOURCE``: take a model in and store it as safetensors.

SOURCE may be a bundled model name (``smollm2-135m``), a Hugging Face model directory, a GGUF file,
or a hub id (``org/name``, when the hub is reachable).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from slipstream.errors import InvalidModel, NotFound
from slipstream.models import bundled, checks, gguf, hub, tasks
from slipstream.progress import Progress, or_null
from slipstream.store import Store, Variant, check_name


@dataclass(frozen=True)
class Source:
    kind: str  # "bundled" | "directory" | "gguf" | "hub"
    location: str
    default_name: str


def resolve_source(source: str) -> Source:
    entry = bundled.lookup(source)
    if entry is not None:
        return Source("bundled", source, entry.name)
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir():
            return Source("directory", str(path.resolve()), _slug(path.resolve().name))
        if path.suffix == ".gguf" or gguf.is_gguf(path):
            return Source("gguf", str(path.resolve()), _slug(path.stem))
        if path.suffix in checks.PICKLE_SUFFIXES or path.suffix == ".safetensors":
            raise InvalidModel(
                f"{path}: a bare weights file; import the directory that holds it with its config.json"
            )
        raise InvalidModel(f"{path}: not a model (expected a model directory, a .gguf file or a hub id)")
    if hub.looks_like_hub_id(source) and not source.startswith((".", "/", "~")):
        return Source("hub", source, _slug(source.split("/")[-1]))
    known = ", ".join(sorted(bundled.CATALOG))
    raise NotFound(
        f"{source!r}: no such file or directory, and not a bundled model ({known}) or a hub id (org/name)"
    )


def import_model(
    source: str,
    name: str | None = None,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> Variant:
    """Import ``source`` into the store and return its registry entry."""
    store = store or Store()
    progress = or_null(progress)
    if name is not None:
        check_name(name)  # before any download or copy
    src = resolve_source(source)
    name = name or src.default_name
    described = src.location
    with store.stage(name) as staged:
        with progress.task(f"importing {name} ({src.kind})", total=None):
            if src.kind == "bundled":
                entry = bundled.CATALOG[src.location]
                pieces = staged / "_pieces"
                pieces.mkdir()
                try:
                    if entry.layout == "gguf":
                        gguf.gguf_to_safetensors(entry.locate(pieces), staged)
                    else:
                        _copy_directory(entry.locate(pieces), staged, False, False)
                finally:
                    shutil.rmtree(pieces, ignore_errors=True)
                described = f"pypi:{entry.distribution}=={entry.version}:{entry.file} (hub: {entry.hub_id})"
            elif src.kind == "gguf":
                gguf.gguf_to_safetensors(Path(src.location), staged)
            elif src.kind == "directory":
                _copy_directory(Path(src.location), staged, allow_pickle, trust_remote_code)
            else:
                download = staged / "_download"
                try:
                    hub.download(src.location, download, revision, allow_pickle)
                    _copy_directory(download, staged, allow_pickle, trust_remote_code)
                finally:
                    shutil.rmtree(download, ignore_errors=True)
                described = f"hub:{src.location}" + (f"@{revision}" if revision else "")
        info = checks.inspect_model_dir(staged)
        _check_tokenizer(staged)
        _check_config(staged, trust_remote_code)
        task = tasks.detect(staged)
        return store.commit(
            staged,
            name=name,
            kind="model",
            format="hf",
            architecture=info.architecture,
            parameters=checks.count_parameters(info.safetensors),
            source=described,
            extra={"trust_remote_code": trust_remote_code and info.remote_code, "task": task},
        )


def _copy_directory(src: Path, dest: Path, allow_pickle: bool, trust_remote_code: bool) -> None:
    info = checks.inspect_model_dir(src)
    checks.check_loadable(info, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    wanted = [src / f for f in (*checks.CONFIG_FILES, *checks.TOKENIZER_FILES) if (src / f).exists()]
    wanted += list(src.glob("*.safetensors.index.json"))
    if info.remote_code:
        wanted += list(src.glob("*.py"))
    for f in wanted:
        shutil.copy2(f, dest / f.name)
    checks.copy_sentence_files(src, dest)
    if info.safetensors:
        for f in info.safetensors:
            shutil.copy2(f, dest / f.name)
        return
    # Pickle-only weights, explicitly allowed: load once with transformers and save as safetensors.
    model = tasks.auto_class(tasks.detect(src)).from_pretrained(src, use_safetensors=False,
                                                          trust_remote_code=trust_remote_code)
    model.save_pretrained(dest, safe_serialization=True)


def _check_tokenizer(directory: Path) -> None:
    if not any((directory / f).exists() for f in checks.TOKENIZER_FILES):
        raise InvalidModel(
            f"{directory.name}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.json...) beside the "
            "weights; every engine needs the model's tokenizer"
        )


def _check_config(directory: Path, trust_remote_code: bool) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise InvalidModel(f"transformers cannot read this model's config ({type(exc).__name__}: {exc})") from exc


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in text.lower()).strip("-.")
    return out or "model"
