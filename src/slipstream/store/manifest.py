"""The manifest written into every model and variant directory (``slipstream.json``).

It holds everything the registry row holds, plus the file list, so the registry can be rebuilt
from the directories alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slipstream.errors import CorruptVariant, InvalidConfig

MANIFEST = "slipstream.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str  # "model" (imported) or "variant" (derived from a parent)
    format: str  # "hf", "ctranslate2", ...
    architecture: str | None
    parameters: int | None
    source: str | None
    parent: str | None
    technique: dict[str, Any] | None
    device: str | None
    library_versions: dict[str, str]
    files: tuple[FileEntry, ...]
    size_bytes: int
    sha256: str
    created: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["slipstream_manifest"] = MANIFEST_VERSION
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        data = dict(data)
        data.pop("slipstream_manifest", None)
        data["files"] = tuple(FileEntry(**f) for f in data.get("files", ()))
        return cls(**data)

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        return cls.from_dict(json.loads((directory / MANIFEST).read_text()))

    def write(self, directory: Path) -> None:
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(directory / MANIFEST)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Written from the manifest and the registry, again whenever a figure is stored: not part of the variant.
DERIVED = (MANIFEST, MANIFEST + ".tmp", "README.md", "README.md.tmp")


def list_files(directory: Path) -> tuple[FileEntry, ...]:
    """Every file under ``directory`` (except the manifest and the README rendered from it), with size and
    sha256, sorted by path."""
    entries = []
    for p in sorted(directory.rglob("*")):
        if p.is_file() and str(p.relative_to(directory)) not in DERIVED:
            entries.append(FileEntry(str(p.relative_to(directory)), p.stat().st_size, sha256_file(p)))
    return tuple(entries)


def size_on_disk(directory: Path, files: tuple[FileEntry, ...]) -> int:
    """Bytes the files take, each hard-linked file once (an ONNX variant links its tokenizer files twice)."""
    seen: dict[tuple[int, int], int] = {}
    for f in files:
        st = (directory / f.path).stat()
        seen[(st.st_dev, st.st_ino)] = f.size
    return sum(seen.values())


def tree_digest(files: tuple[FileEntry, ...]) -> str:
    """One sha256 for a set of files: the hash of their sorted (path, sha256) pairs."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda e: e.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()


# How much of a variant is checked when it is loaded: "sha256" (the default) hashes every file the manifest
# lists; "size" checks only that each is there with its size (for multi-GB variants loaded often).
VERIFY_ENV = "SLIPSTREAM_VERIFY"


def verify(directory: Path, hashes: bool | None = None) -> Manifest:
    """Check ``directory``'s files against its manifest before anything loads them, so a file changed on
    disk (a bad copy, a disk error, an edit by hand) is refused with its name instead of loading wrong
    weights. ``hashes``: also compare sha256 (default: unless ``$SLIPSTREAM_VERIFY`` is ``size``). Files
    the manifest does not list (caches an engine writes beside the weights) are not checked."""
    if hashes is None:
        mode = os.environ.get(VERIFY_ENV, "sha256").strip().lower()
        if mode not in ("sha256", "size"):
            raise InvalidConfig(f"{VERIFY_ENV} must be 'sha256' or 'size', got {mode!r}")
        hashes = mode == "sha256"
    manifest = Manifest.read(directory)
    fix = f"remove it (slipstream models remove {manifest.name}) and make it again"
    for entry in manifest.files:
        path = directory / entry.path
        if not path.is_file():
            raise CorruptVariant(f"{manifest.name}: {entry.path} is missing from {directory}; {fix}")
        size = path.stat().st_size
        if size != entry.size:
            raise CorruptVariant(f"{manifest.name}: {entry.path} is {size} bytes on disk, its manifest says "
                                 f"{entry.size}: it was changed after the variant was written; {fix}")
        if hashes and (digest := sha256_file(path)) != entry.sha256:
            raise CorruptVariant(f"{manifest.name}: {entry.path} has sha256 {digest[:16]}…, its manifest says "
                                 f"{entry.sha256[:16]}…: it was changed after the variant was written; {fix} "
                                 f"({VERIFY_ENV}=size skips this check)")
    return manifest
