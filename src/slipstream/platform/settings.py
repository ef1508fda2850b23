"""The platform service's settings: where it listens, its keys, how many jobs run at once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PlatformSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list, repr=False)
    max_workers: int = Field(1, ge=1)  # jobs running at once, each in its own process
    upload_limit_mb: int = Field(2048, ge=1)  # one upload's files together
    # how a deployment runs when its request does not say: one `slipstream serve` process, or Ray Serve
    deploy_runtime: Literal["process", "ray"] = "process"
