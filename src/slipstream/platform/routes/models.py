"""/api/v1/models: what the store holds, each variant with its lineage, technique, size and figures."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, List, Optional

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from slipstream.errors import InvalidConfig
from slipstream.platform.openapi import CONFLICT, INVALID, NOT_FOUND, error
from slipstream.platform.routes.common import conflict, not_found, platform
from slipstream.platform.routes.jobs import Job, view as job_view
from slipstream.serving.errors import ApiError, bad_request

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class ModelSummary(BaseModel):
    name: str
    kind: str
    format: str
    architecture: Optional[str]
    parameters: Optional[int]
    size_bytes: int
    parent: Optional[str]
    technique: Optional[dict[str, Any]]
    created: str


class ModelList(BaseModel):
    data: list[ModelSummary]


class Result(BaseModel):
    kind: str
    key: str
    settings: dict[str, Any]
    metrics: dict[str, Any]
    machine: dict[str, Any]
    created: str


class ModelDetail(ModelSummary):
    lineage: list[str]
    children: list[str]
    results: list[Result]


class Deleted(BaseModel):
    deleted: str


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="A bundled name (smollm2-135m), a directory or .gguf file on "
                                                  "the service's machine, or a hub id (org/name)")
    name: Optional[str] = Field(None, description="The name in the store (default: from the source)")


# An upload is one GGUF file, or the files of a safetensors model directory. Weights that unpickle (run code
# when loaded) are refused, as `slipstream import` refuses them without --allow-pickle.
PICKLED = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}
DIRECTORY_FILES = {".json", ".safetensors", ".txt", ".model", ".jinja", ".md", ".tiktoken", ".vocab", ".merges"}
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TOO_LARGE = error(413, "The upload is larger than the service's limit (upload_limit_mb)")


def _file_name(raw: str | None) -> str:
    """The file's own name, sanitized: the last path part (a browser sends a folder's files as dir/file),
    letters, digits, '.', '_' and '-' only, never hidden; anything else is refused, not rewritten."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not _FILE.fullmatch(name):
        raise bad_request(f"file name {raw!r}: use letters, digits, '.', '_' and '-' (no hidden files)", "files")
    return name


def check_upload(names: list[str]) -> str:
    """``gguf`` or ``directory`` for a set of file names that may be imported, else a 400 naming the file."""
    if not names:
        raise bad_request("no files: upload one .gguf file, or a model directory's files", "files")
    if len(set(names)) != len(names):
        raise bad_request("two files have the same name", "files")
    for n in names:
        if Path(n).suffix.lower() in PICKLED:
            raise bad_request(f"{n}: pickled weights are refused (loading them can run code); convert them to "
                              "safetensors", "files")
    if any(n.lower().endswith(".gguf") for n in names):
        if len(names) != 1:
            raise bad_request("a GGUF upload is one .gguf file on its own", "files")
        return "gguf"
    odd = [n for n in names if Path(n).suffix.lower() not in DIRECTORY_FILES]
    if odd:
        raise bad_request(f"{odd[0]}: a model directory holds {', '.join(sorted(DIRECTORY_FILES))} files", "files")
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise bad_request("a model directory needs config.json and its .safetensors weights", "files")
    return "directory"


def summary(v: Any) -> dict[str, Any]:
    return {"name": v.name, "kind": v.kind, "format": v.format, "architecture": v.architecture,
            "parameters": v.parameters, "size_bytes": v.size_bytes, "parent": v.parent, "technique": v.technique,
            "created": v.created}


@router.get("", response_model=ModelList)
async def list_models(request: Request) -> dict:
    store = platform(request).store
    return {"data": [summary(v) for v in store.list()]}


@router.post("/import", status_code=202, response_model=Job, responses=INVALID)
async def import_from(body: ImportRequest, request: Request) -> dict:
    """Import as a job (``kind: import``): watch it at /api/v1/jobs/{id}."""
    try:
        job = await asyncio.to_thread(platform(request).jobs.submit, "import", body.model_dump(exclude_none=True))
    except InvalidConfig as exc:
        raise bad_request(str(exc), "name" if body.name and "name" in str(exc) else "source") from None
    return job_view(job)


@router.post("/upload", status_code=202, response_model=Job, responses={**INVALID, **CONFLICT, **TOO_LARGE})
async def upload(request: Request, files: List[UploadFile] = File(..., description="One .gguf file, or a "
                                                                                 "safetensors model directory's files"),
                 name: Optional[str] = Form(None, description="The name in the store (default: the file's or "
                                                              "the directory's)")) -> dict:
    """Upload weights (multipart) and import them as a job; the uploaded files are removed once imported."""
    st = platform(request)
    names = [_file_name(f.filename) for f in files]
    kind = check_upload(names)
    if name is None and kind == "gguf":
        name = Path(names[0]).stem
    if name is None:
        raise bad_request("a model directory's upload needs a name", "name")
    try:
        from slipstream.store import check_name

        check_name(name)
    except InvalidConfig as exc:
        raise bad_request(str(exc), "name") from None
    if st.store.exists(name):
        raise conflict(f"the store already holds {name!r}")
    limit = st.settings.upload_limit_mb << 20
    target = st.store.home / "uploads" / uuid.uuid4().hex
    target.mkdir(parents=True)
    try:
        total = 0
        for f, n in zip(files, names):
            with open(target / n, "xb") as out:
                while chunk := await f.read(1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise ApiError(413, f"the upload is larger than {st.settings.upload_limit_mb} MB",
                                       param="files", code="upload_too_large")
                    out.write(chunk)
        source = target / names[0] if kind == "gguf" else target
        job = await asyncio.to_thread(st.jobs.submit, "import", {"source": str(source), "name": name})
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return job_view(job)


@router.get("/{name}", response_model=ModelDetail, responses=NOT_FOUND)
async def show_model(name: str, request: Request) -> dict:
    store = platform(request).store
    if not store.exists(name):
        raise not_found("model", name)
    v = store.get(name)
    lineage, parent = [], v.parent
    while parent and store.exists(parent):  # the chain back to the imported model
        lineage.append(parent)
        parent = store.get(parent).parent
    results = [{"kind": r.kind, "key": r.key, "settings": r.settings, "metrics": r.metrics,
                "machine": r.machine, "created": r.created} for r in store.results(name)]
    return {**summary(v), "lineage": lineage, "children": [c.name for c in store.children(name)],
            "results": results}


@router.delete("/{name}", response_model=Deleted, responses={**NOT_FOUND, **CONFLICT})
async def delete_model(name: str, request: Request) -> dict:
    st = platform(request)
    if not st.store.exists(name):
        raise not_found("model", name)
    deployed = st.deployer.using(name)
    if deployed:
        raise conflict(f"cannot delete {name!r}: deployment {deployed[0]} serves it; delete the deployment first")
    children = st.store.children(name)
    if children:
        raise conflict(f"cannot delete {name!r}: variants derive from it ({', '.join(c.name for c in children)})")
    busy = st.jobs.using(name)
    if busy:
        raise conflict(f"cannot delete {name!r}: job {busy[0]} uses it")
    st.store.remove(name)
    return {"deleted": name}
