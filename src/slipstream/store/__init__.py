"""The local store: model and variant directories under ``$SLIPSTREAM_HOME`` plus the registry (an SQLite
file in the home, or the database ``$SLIPSTREAM_DATABASE_URL`` names).

Writes are atomic: a variant is built in ``staging/``, its manifest written last, then renamed into
``variants/`` in one step and only then registered. A process killed at any point leaves either
nothing or a complete directory; :meth:`Store.recover` removes dead staging directories and
re-registers complete directories whose registry row is missing.

Each staging directory has a lock file beside it (``<dir>.lock``), held with ``flock`` for as long
as the writing process lives: the kernel drops the lock when the process dies, however it dies, so
the next store to open can tell a dead writer's leftovers from a live one's work in progress (a pid
alone cannot: a killed child that nobody reaped, or a pid reused by another process, still looks
alive). See docs/reliability.md.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from slipstream.errors import InvalidConfig, NotFound, SlipstreamError
from slipstream.extras import library_versions
from slipstream.home import slipstream_home
from slipstream.store.manifest import MANIFEST, Manifest, list_files, size_on_disk, tree_digest, verify
from slipstream.store.registry import DATABASE_URL_ENV, Registry, ResultRow, VariantRow, now

# One path component, never "." or "..", no separators, no NUL or control characters. Matched with
# fullmatch: ``$`` alone would let a trailing newline through.
SERVING = "serving"  # the result kind of serving recommendations
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LOCK = ".lock"

log = logging.getLogger("slipstream.store")


@dataclass(frozen=True)
class Variant:
    """A model or variant in the store (an imported model is a variant with no parent)."""

    name: str
    kind: str
    format: str
    architecture: str | None
    parameters: int | None
    size_bytes: int
    sha256: str
    source: str | None
    parent: str | None
    technique: dict[str, Any] | None
    device: str | None
    path: Path
    created: str

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def check_name(name: str) -> str:
    """``name`` if it is safe as a directory name inside the store, else a clear refusal: a name given by
    a user (``--name``) must not reach outside ``variants/`` (``../x``, ``/abs``, ``a/../../b``, NUL)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidConfig(
            f"invalid name {name!r}: use up to 128 letters, digits, '.', '_' and '-', starting with a letter "
            "or digit (no '/', no '..')"
        )
    return name


class Store:
    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser().resolve() if home else slipstream_home()
        self.variants_dir = self.home / "variants"
        self.staging_dir = self.home / "staging"
        self.variants_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        # $SLIPSTREAM_DATABASE_URL (PostgreSQL for a team) or the SQLite file in the home (docs/database.md)
        self.registry = Registry(os.environ.get(DATABASE_URL_ENV) or self.home / "registry.sqlite")
        self.recover()

    # reading --------------------------------------------------------------------------------
    def get(self, name: str) -> Variant:
        row = self.registry.get_variant(name)
        if row is None:
            known = [v.name for v in self.registry.variants()]
            hint = f"; known: {', '.join(known)}" if known else "; the store is empty (slipstream models import ...)"
            raise NotFound(f"no model or variant named {name!r} in {self.home}{hint}")
        return self._variant(row)

    def exists(self, name: str) -> bool:
        return self.registry.get_variant(name) is not None

    def list(self, kind: str | None = None) -> list[Variant]:
        return [self._variant(r) for r in self.registry.variants(kind)]

    def children(self, name: str) -> list[Variant]:
        return [v for v in self.list() if v.parent == name]

    def _variant(self, row: VariantRow) -> Variant:
        d = dict(row.__dict__)
        d["path"] = self.home / row.path
        return Variant(**d)

    # writing --------------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str) -> Iterator[Path]:
        """A fresh staging directory, removed if the block raises (or the process dies)."""
        check_name(name)
        if self.exists(name) or (self.variants_dir / name).exists():
            raise InvalidConfig(f"{name!r} already exists in the store; choose another --name or remove it first")
        tmp, lock_fd = self._locked_staging(name)
        try:
            tmp.mkdir(parents=True)
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            _lock_path(tmp).unlink(missing_ok=True)
            os.close(lock_fd)  # releases the lock; last, so the directory is never unguarded while it exists

    def _locked_staging(self, name: str) -> tuple[Path, int]:
        """A fresh staging path and the descriptor of its lock file, locked before the directory exists."""
        while True:
            tmp = self.staging_dir / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            lock = _lock_path(tmp)
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # a recovering store may have unlinked the file between our open and our lock: try again
                if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                    return tmp, fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def commit(
        self,
        staged: Path,
        *,
        name: str,
        kind: str,
        format: str,
        architecture: str | None,
        parameters: int | None,
        source: str | None,
        parent: str | None = None,
        technique: dict[str, Any] | None = None,
        device: str | None = None,
        versions: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Variant:
        """Write the manifest, move ``staged`` into place in one rename, then register it."""
        files = list_files(staged)
        manifest = Manifest(
            name=name,
            kind=kind,
            format=format,
            architecture=architecture,
            parameters=parameters,
            source=source,
            parent=parent,
            technique=technique,
            device=device,
            library_versions=versions or library_versions(),
            files=files,
            size_bytes=size_on_disk(staged, files),
            sha256=tree_digest(files),
            created=now(),
            extra=extra or {},
        )
        manifest.write(staged)
        final = self.variants_dir / name
        if final.exists():
            raise InvalidConfig(f"{name!r} already exists in the store")
        os.replace(staged, final)
        try:
            self._register(manifest)
        except BaseException:
            # The registry could not take the row (a full disk, say): put the directory back in staging, where
            # the caller's stage() removes it, rather than leave a variant that the next open would register.
            os.replace(final, staged)
            raise
        return self.get(name)

    def _register(self, m: Manifest) -> None:
        self.registry.add_variant(
            VariantRow(
                name=m.name,
                kind=m.kind,
                format=m.format,
                architecture=m.architecture,
                parameters=m.parameters,
                size_bytes=m.size_bytes,
                sha256=m.sha256,
                source=m.source,
                parent=m.parent,
                technique=m.technique,
                device=m.device,
                path=str((self.variants_dir / m.name).relative_to(self.home)),
                created=m.created,
            )
        )

    def remove(self, name: str) -> None:
        variant = self.get(name)
        children = self.children(name)
        if children:
            raise SlipstreamError(
                f"cannot remove {name!r}: variants derive from it ({', '.join(c.name for c in children)})"
            )
        self.registry.remove_variant(name)
        shutil.rmtree(variant.path, ignore_errors=True)

    def manifest(self, name: str) -> Manifest:
        return Manifest.read(self.get(name).path)

    def verify(self, name: str, hashes: bool | None = None) -> Variant:
        """``name``'s files checked against its manifest (sizes; sha256 too unless ``hashes`` is False or
        ``SLIPSTREAM_VERIFY=size``); raises :class:`~slipstream.errors.CorruptVariant` naming the file."""
        variant = self.get(name)
        verify(variant.path, hashes=hashes)
        return variant

    # results --------------------------------------------------------------------------------
    def add_result(self, variant: str, kind: str, key: str, settings: dict, metrics: dict,
                   machine: dict, versions: dict) -> int:
        return self.registry.add_result(variant, kind, key, settings, metrics, machine, versions)

    def result(self, variant: str, kind: str, key: str) -> ResultRow | None:
        rows = self.registry.results(variant, kind, key)
        return rows[-1] if rows else None

    def results(self, variant: str | None = None, kind: str | None = None) -> list[ResultRow]:
        return self.registry.results(variant, kind)

    # serving recommendations ------------------------------------------------------------------
    def recommend(self, variant: str, settings: dict[str, Any], source: dict[str, Any]) -> None:
        """Keep how ``variant`` serves best on this machine (``engine``, ``threads``, ``batching``), as a
        search measured it (``source``: which search, on what objective); ``slipstream serve`` and deployments
        use it where nothing else is given."""
        from slipstream.machine import describe_machine

        self.add_result(variant, SERVING, "recommended", source, settings, describe_machine(), {})

    def recommendation(self, variant: str) -> dict[str, Any] | None:
        """The latest serving recommendation for ``variant`` measured on a machine with this many CPUs (threads
        chosen on another machine size do not carry over), or None."""
        row = self.result(variant, SERVING, "recommended")
        if row is None or row.machine.get("logical_cpus") != os.cpu_count():
            return None
        return dict(row.metrics) | {"source": row.settings}

    # crash recovery -------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Remove staging left by dead processes (reported on the ``slipstream.store`` logger, and returned),
        keep what live ones are writing, and register complete variants whose row is missing."""
        removed = []
        for entry in sorted(self.staging_dir.iterdir()):
            if entry.name.endswith(LOCK):
                continue
            held = _hold_if_dead(entry)
            if held is None:
                continue  # a live process is writing it
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                _lock_path(entry).unlink(missing_ok=True)
                removed.append(entry.name)
            finally:
                if held >= 0:
                    os.close(held)
        for lock in self.staging_dir.glob("*" + LOCK):  # a writer died after its directory was gone
            held = _hold_if_dead(lock.with_name(lock.name[: -len(LOCK)]))
            if held is not None and not lock.with_name(lock.name[: -len(LOCK)]).exists():
                lock.unlink(missing_ok=True)
            if held is not None and held >= 0:
                os.close(held)
        if removed:
            log.warning("removed %d staging director%s left by killed processes in %s: %s", len(removed),
                        "y" if len(removed) == 1 else "ies", self.staging_dir, ", ".join(removed))
        for d in self.variants_dir.iterdir():
            if not d.is_dir():
                continue
            if not (d / MANIFEST).exists():
                # Only a rename can put a directory here, and it always carries a manifest;
                # anything else is not ours to keep.
                shutil.rmtree(d, ignore_errors=True)
            elif self.registry.get_variant(d.name) is None:
                manifest = Manifest.read(d)
                if manifest.name != d.name:  # a row's path is built from the name: it must be this directory
                    log.warning("not registering %s: its manifest names it %r", d, manifest.name)
                    continue
                self._register(manifest)
        return removed


def _lock_path(staging: Path) -> Path:
    return staging.with_name(staging.name + LOCK)


def _hold_if_dead(staging: Path) -> int | None:
    """None when a live process owns ``staging``; else the descriptor of its lock, now held by us (-1 when it
    has no lock file: written before locks, or by a process that died before making one)."""
    lock = _lock_path(staging)
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        pid = _pid_of(staging.name)
        return None if pid is not None and _alive(pid) and staging.exists() else -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _pid_of(staging_name: str) -> int | None:
    parts = staging_name.rsplit(".", 2)
    try:
        return int(parts[1]) if len(parts) == 3 else None
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    from slipstream.lifetime import pid_alive

    return pid_alive(pid)


__all__ = ["Store", "Variant", "check_name"]
