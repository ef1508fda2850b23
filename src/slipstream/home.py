"""Where slipstream keeps its state: ``$SLIPSTREAM_HOME``, default ``~/.slipstream``."""

from __future__ import annotations

import os
from pathlib import Path


def slipstream_home() -> Path:
    env = os.environ.get("SLIPSTREAM_HOME")
    root = Path(env).expanduser() if env else Path.home() / ".slipstream"
    return root.resolve()
