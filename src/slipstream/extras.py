"""Optional dependencies: import them on use, with a message naming the extra when missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from slipstream.errors import MissingExtra


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming the ``pip install`` that fixes it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = purpose or f"'{module}'"
        raise MissingExtra(
            f"{what} needs the optional dependency '{module}', which is not installed "
            f"({exc.__class__.__name__}: {exc}); install it with: pip install 'slipstream[{extra}]'"
        ) from exc


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def version_of(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions(*distributions: str) -> dict[str, str]:
    """Versions of the given distributions that are installed (missing ones are left out)."""
    import platform

    found = {"python": platform.python_version()}
    for name in ("slipstream", "torch", "transformers", *distributions):
        v = version_of(name)
        if v is not None:
            found[name] = v
    return found
