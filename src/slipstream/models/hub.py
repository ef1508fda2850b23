"""Hugging Face hub ids (``org/name``): download the files slipstream needs, safetensors first."""

from __future__ import annotations

import re
from pathlib import Path

from slipstream.errors import NotFound, SlipstreamError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(source: str) -> bool:
    return bool(HUB_ID.match(source))


def download(repo_id: str, dest: Path, revision: str | None = None, allow_pickle: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.spm", "*.txt", "*.jinja", "*.py"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, local_dir=dest, allow_patterns=patterns)
        )
    except RepositoryNotFoundError as exc:
        raise NotFound(f"hub id {repo_id!r}: no such repository on the Hugging Face hub (or it is gated)") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, Exception) as exc:  # network errors vary
        raise SlipstreamError(
            f"hub id {repo_id!r}: could not download from the Hugging Face hub "
            f"({type(exc).__name__}); is the hub reachable? Import a local directory or GGUF instead"
        ) from exc
