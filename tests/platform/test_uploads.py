"""Models into the platform: import by source as a job, and uploads (multipart) of a safetensors model
directory or one GGUF file, with pickles, odd names, oversize bodies and names that would escape refused."""

from __future__ import annotations

import httpx
import pytest

from tests.platform.test_api import Platform, _client, _wait_job


@pytest.fixture
def platform(store):
    p = Platform(store, api_keys=["k"], upload_limit_mb=64)
    yield p
    p.close()


def _files(directory):
    return [("files", (f.name, f.read_bytes())) for f in sorted(directory.iterdir()) if f.is_file()]


def test_import_route_and_directory_upload(platform, store, tiny_chat_dir):
    with _client(platform) as c:
        r = c.post("/api/v1/models/import", json={"source": str(tiny_chat_dir), "name": "tiny"})
        assert r.status_code == 202 and r.json()["kind"] == "import"
        assert _wait_job(c, r.json()["id"])["state"] == "succeeded"
        assert c.post("/api/v1/models/import", json={"source": "x", "name": "../up"}).status_code == 400
        assert c.post("/api/v1/models/import", json={"source": "x", "nmae": "y"}).status_code == 400

        files = _files(tiny_chat_dir)
        assert {f[1][0] for f in files} >= {"config.json", "model.safetensors"}
        r = c.post("/api/v1/models/upload", files=files, data={"name": "uploaded"})
        assert r.status_code == 202, r.text
        job = _wait_job(c, r.json()["id"])
        assert job["state"] == "succeeded", job
        up, orig = store.get("uploaded"), store.get("tiny")
        assert up.sha256 == orig.sha256 and up.parameters == orig.parameters
        assert not any((store.home / "uploads").iterdir())  # the upload's files, gone once imported
        assert c.post("/api/v1/models/upload", files=files, data={"name": "uploaded"}).status_code == 409


def test_gguf_upload(platform, store, tiny_llama_dir):
    from slipstream.models.intake import import_model
    from slipstream.pipeline import optimize

    import_model(str(tiny_llama_dir), "tiny", store=store)
    variant = optimize("tiny", "gguf", {"quantization": "F32"}, name="tiny-f32", store=store)
    gguf = next(variant.path.glob("*.gguf"))
    with _client(platform) as c:
        r = c.post("/api/v1/models/upload", files=[("files", ("my-model.gguf", gguf.read_bytes()))])
        assert r.status_code == 202, r.text
        job = _wait_job(c, r.json()["id"])
        assert job["state"] == "succeeded" and job["result"] == {"variant": "my-model"}, job
        assert store.get("my-model").parameters == store.get("tiny").parameters


@pytest.mark.parametrize("files,data,status,named", [
    ([("pytorch_model.bin", b"x"), ("config.json", b"{}")], {"name": "a"}, 400, "pickled"),
    ([("model.pt", b"x")], {"name": "a"}, 400, "pickled"),
    ([(".env", b"x")], {"name": "a"}, 400, "hidden"),
    ([("a.gguf", b"x"), ("b.gguf", b"y")], {}, 400, "one .gguf"),
    ([("model.safetensors", b"x")], {"name": "a"}, 400, "config.json"),
    ([("config.json", b"{}"), ("run.py", b"import os")], {"name": "a"}, 400, "run.py"),
    ([("config.json", b"{}"), ("model.safetensors", b"x")], {}, 400, "needs a name"),
    ([("x.gguf", b"x")], {"name": "../../etc"}, 400, "invalid name"),
    ([("config.json", b"{}"), ("config.json", b"{}")], {"name": "a"}, 400, "same name"),
])
def test_bad_uploads_are_refused_and_leave_nothing(platform, store, files, data, status, named):
    with _client(platform) as c:
        r = c.post("/api/v1/models/upload", files=[("files", f) for f in files], data=data)
        assert r.status_code == status, r.text
        assert named in r.json()["error"]["message"]
        assert c.get("/api/v1/jobs").json()["data"] == []
    assert not (store.home / "uploads").exists() or not any((store.home / "uploads").iterdir())


def test_a_path_in_a_file_name_stays_inside_the_store(platform, store):
    with _client(platform) as c:
        r = c.post("/api/v1/models/upload", files=[("files", ("../../../../tmp/evil.gguf", b"GGUF-not-really"))])
        assert r.status_code == 202
        job = _wait_job(c, r.json()["id"])
        assert job["state"] == "failed"  # not a GGUF: refused by the import, and the upload removed
        assert job["spec"]["source"].startswith(str(store.home / "uploads"))
        assert job["spec"]["source"].endswith("/evil.gguf")
    assert not any((store.home / "uploads").iterdir())


def test_an_upload_over_the_limit_is_413(store):
    p = Platform(store, api_keys=["k"], upload_limit_mb=1)
    try:
        with _client(p) as c:
            r = c.post("/api/v1/models/upload", files=[("files", ("big.gguf", b"\0" * (2 << 20)))])
            assert r.status_code == 413, r.text
        assert not (store.home / "uploads").exists() or not any((store.home / "uploads").iterdir())
        assert httpx.get(p.url + "/health").status_code == 200
    finally:
        p.close()
