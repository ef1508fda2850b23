"""A throwaway PostgreSQL server for the tests: initdb into a temporary directory, started on a free port on
127.0.0.1, one fresh database per test, stopped and removed at the end of the session.

It needs Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` on PATH or under
``/usr/lib/postgresql/*/bin``) and psycopg 3 (the ``postgres`` extra); without either the PostgreSQL tests are
skipped with the reason. initdb refuses to run as root, so as root the server runs as ``nobody`` (through
``runuser``, else ``setpriv``) in a directory it owns. It trades durability for speed (``fsync=off``): the
tests kill clients, never the server.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

USER = "slipstream"  # the server's superuser (trust authentication on 127.0.0.1 only)


class Unavailable(Exception):
    """PostgreSQL cannot run here; the message says why (the tests skip with it)."""


def find_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's newest /usr/lib/postgresql/N/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
                   if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path, root: Path, as_user: list[str]):
        self.bindir, self.root, self.as_user = bindir, root, as_user
        self.data, self.log = root / "data", root / "server.log"
        self.port: int | None = None

    @classmethod
    def start(cls) -> "PostgresServer":
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"psycopg 3 is not installed ({exc}): pip install -e '.[postgres]'") from None
        bindir = find_bin()
        if bindir is None:
            raise Unavailable("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in "
                              "/usr/lib/postgresql/*/bin): apt-get install postgresql")
        as_user: list[str] = []
        root = Path(tempfile.mkdtemp(prefix="slipstream-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        if os.geteuid() == 0:
            as_user = _unprivileged()
            os.chown(root, 65534, 65534)  # nobody:nogroup
        server = cls(bindir, root, as_user)
        try:
            server._init()
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=self.root)

    def _init(self) -> None:
        done = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                         "--encoding=UTF8", "--locale=C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def _launch(self) -> None:
        last = ""
        for _ in range(3):  # the free port may be taken between our probe and the server's bind
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
            done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                             "-t", "60", "-o", options, "start")
            if done.returncode == 0:
                return
            last = f"{done.stdout}\n{done.stderr}\n{self.log.read_text() if self.log.exists() else ''}"
        raise RuntimeError(f"pg_ctl start failed:\n{last}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as c:
            c.execute(sql)

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        from slipstream.store import registry

        engine = registry._engines.pop(url, None)  # this process's pooled connections to it
        if engine is not None:
            engine.dispose()
        self._admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged() -> list[str]:
    """The command prefix that runs a program as ``nobody`` (we are root, and initdb refuses root)."""
    candidates = []
    if shutil.which("runuser"):
        candidates.append(["runuser", "-u", "nobody", "--"])
    if shutil.which("setpriv"):
        candidates.append(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    for prefix in candidates:
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    raise Unavailable("running as root, and neither runuser nor setpriv could switch to the user nobody "
                      "(initdb refuses to run as root)")


__all__ = ["PostgresServer", "Unavailable", "find_bin"]

if __name__ == "__main__":  # a quick check: start, make a database, stop
    t = time.monotonic()
    s = PostgresServer.start()
    print("started", s.url(), f"{time.monotonic() - t:.1f}s")
    print(s.create_database())
    s.stop()
