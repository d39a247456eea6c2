"""libpq itself, through ctypes: connection strings, and one read-only pipeline, without psycopg.

Importing psycopg costs 0.25 - 0.4 s (its adapters, and the asyncio, ssl and
importlib.metadata it pulls in): a third of what a whole ``orchestrator validate`` of 1,000
migrations may take. Yet that command needs from a driver only a dozen libpq calls: parse
the connection string, connect, send the snapshot's statements in one pipeline, take the
results as they come. This module makes those calls on the very libpq psycopg uses
(psycopg-binary's bundled copy, else the system's), so a validate that succeeds never
imports psycopg. Everything else, and every read when no libpq 15 or newer can be loaded
(:func:`library` is None), goes through psycopg.

It imports only the standard library: the command line loads it before anything else.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

__all__ = ["PIPELINE_VERSION", "ConninfoError", "Libpq", "LibpqError", "library", "parse_conninfo"]

# Pipeline mode with flush requests: libpq 15 and newer.
PIPELINE_VERSION = 150000

# The result statuses and diagnostic fields read here (libpq-fe.h, postgres_ext.h).
_CONNECTION_OK = 0
_PGRES_TUPLES_OK = 2
_PGRES_FATAL_ERROR = 7
_PGRES_PIPELINE_SYNC = 10
_PG_DIAG_SQLSTATE = ord("C")
_PG_DIAG_MESSAGE_PRIMARY = ord("M")


class ConninfoError(ValueError):
    """A connection string libpq cannot parse; the message is libpq's."""


class LibpqError(Exception):
    """A failed connection or statement: libpq's (or the server's) words, and the SQLSTATE
    when the server gave one. ``connecting``: the connection itself could not be made."""

    def __init__(self, message: str, *, sqlstate: str | None = None, connecting: bool = False):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.connecting = connecting


class _ConninfoOption(ctypes.Structure):
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


def _candidates() -> Iterator[str]:
    """Where libpq may be, psycopg's own copy first (so both speak through the same one)."""
    spec = importlib.util.find_spec("psycopg_binary")  # found, not imported
    if spec is not None and spec.submodule_search_locations:
        package = next(iter(spec.submodule_search_locations))
        # Bundled beside the package (auditwheel on Linux, delvewheel on Windows), or
        # inside it (delocate on macOS).
        for pattern in ("../psycopg_binary.libs/libpq*", ".dylibs/libpq*"):
            yield from sorted(glob.glob(os.path.join(package, pattern)))
    if sys.platform == "darwin":
        yield "libpq.5.dylib"
    elif sys.platform == "win32":
        yield "libpq.dll"
    else:
        yield "libpq.so.5"


@functools.cache
def library() -> Libpq | None:
    """The libpq this process can use for pipelines (15 or newer), loaded once; None if
    there is none (then psycopg does everything)."""
    for candidate in _candidates():
        try:
            lib = Libpq(ctypes.CDLL(candidate))
        except (OSError, AttributeError):  # not there, or too old to have the functions
            continue
        if lib.version >= PIPELINE_VERSION:
            return lib
    return None


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """libpq's parse of a connection string (a URL or ``key=value`` pairs): the parameters
    it sets. :class:`ConninfoError` with libpq's message if it is malformed."""
    lib = library()
    if lib is not None:
        return lib.parse_conninfo(conninfo)
    import psycopg  # no usable libpq of our own: psycopg's parse is the same libpq call
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except psycopg.ProgrammingError as exc:
        raise ConninfoError(str(exc).strip()) from None


class Libpq:
    """The few libpq functions used here, typed for ctypes."""

    def __init__(self, dll: ctypes.CDLL) -> None:
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        signatures: dict[str, tuple[object, list[object]]] = {
            "PQlibVersion": (i, []),
            "PQconninfoParse": (ctypes.POINTER(_ConninfoOption), [s, ctypes.POINTER(p)]),
            "PQconninfoFree": (None, [p]),
            "PQfreemem": (None, [p]),
            "PQconnectdbParams": (p, [ctypes.POINTER(s), ctypes.POINTER(s), i]),
            "PQstatus": (i, [p]),
            "PQerrorMessage": (s, [p]),
            "PQfinish": (None, [p]),
            "PQescapeLiteral": (p, [p, s, ctypes.c_size_t]),
            "PQenterPipelineMode": (i, [p]),
            "PQsendQueryParams": (i, [p, s, i, p, p, p, p, i]),
            "PQsendFlushRequest": (i, [p]),
            "PQpipelineSync": (i, [p]),
            "PQgetResult": (p, [p]),
            "PQresultStatus": (i, [p]),
            "PQresultErrorField": (s, [p, i]),
            "PQresultErrorMessage": (s, [p]),
            "PQntuples": (i, [p]),
            "PQgetvalue": (p, [p, i, i]),
            "PQgetlength": (i, [p, i, i]),
            "PQclear": (None, [p]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(dll, name)  # AttributeError: an older libpq
            function.restype = restype
            function.argtypes = argtypes
        self._dll = dll
        self.version: int = dll.PQlibVersion()

    def parse_conninfo(self, conninfo: str) -> dict[str, str]:
        """See :func:`parse_conninfo`."""
        error = ctypes.c_void_p()
        options = self._dll.PQconninfoParse(conninfo.encode(), ctypes.byref(error))
        if not options:
            message = "unparseable connection string"
            if error.value:
                message = (ctypes.string_at(error.value).decode(errors="replace")).strip()
                self._dll.PQfreemem(error)
            raise ConninfoError(message)
        try:
            params: dict[str, str] = {}
            index = 0
            while (option := options[index]).keyword is not None:  # ends with a NULL keyword
                if option.val is not None:
                    params[option.keyword.decode()] = option.val.decode(errors="replace")
                index += 1
            return params
        finally:
            self._dll.PQconninfoFree(ctypes.cast(options, ctypes.c_void_p))

    @contextmanager
    def connect(self, params: Mapping[str, str]) -> Iterator[Connection]:
        """A blocking connection made from ``params`` (a ``dbname`` holding a URL or a
        connection string is expanded, and the parameters after it override its own),
        closed at the end of the block. :class:`LibpqError` if it cannot be made."""
        keys = (ctypes.c_char_p * (len(params) + 1))(*(k.encode() for k in params), None)
        values = (ctypes.c_char_p * (len(params) + 1))(*(v.encode() for v in params.values()), None)
        handle = self._dll.PQconnectdbParams(keys, values, 1)  # blocks, without the GIL
        if not handle:
            raise LibpqError("out of memory", connecting=True)
        try:
            if self._dll.PQstatus(handle) != _CONNECTION_OK:
                raise LibpqError(_text(self._dll.PQerrorMessage(handle)), connecting=True)
            yield Connection(self._dll, handle)
        finally:
            self._dll.PQfinish(handle)


class Connection:
    """An open blocking connection (see :meth:`Libpq.connect`)."""

    def __init__(self, dll: ctypes.CDLL, handle: int) -> None:
        self._dll = dll
        self._handle = handle

    def escape_literal(self, text: str) -> bytes:
        """``text`` as an SQL string literal, quoted as this connection's settings require
        (libpq's PQescapeLiteral: what psycopg's client-side binding writes)."""
        raw = text.encode()
        escaped = self._dll.PQescapeLiteral(self._handle, raw, len(raw))
        if not escaped:
            raise LibpqError(_text(self._dll.PQerrorMessage(self._handle)))
        try:
            return ctypes.string_at(escaped)
        finally:
            self._dll.PQfreemem(escaped)

    def pipeline(self, statements: Sequence[bytes]) -> Iterator[bytes]:
        """Send ``statements`` in one pipeline, each followed by a flush request, then take
        their results as the server sends them: the first value of each statement that
        returns rows, as soon as it has come. The first failure raises :class:`LibpqError`
        once the pipeline is done (the connection is then fit only to be closed).

        Blocking mode is safe here: the statements are a few kilobytes, which the socket
        takes whole, so libpq never waits to send while the server waits for us to read.
        """
        dll, handle = self._dll, self._handle
        if not dll.PQenterPipelineMode(handle):
            raise self._error()
        for statement in statements:
            if not dll.PQsendQueryParams(handle, statement, 0, None, None, None, None, 0):
                raise self._error()
            if not dll.PQsendFlushRequest(handle):
                raise self._error()
        if not dll.PQpipelineSync(handle):  # sends all of it
            raise self._error()
        failure: LibpqError | None = None
        while True:
            result = dll.PQgetResult(handle)  # blocks, without the GIL
            if not result:  # the end of one statement's results, or of the connection
                if dll.PQstatus(handle) != _CONNECTION_OK:
                    failure = failure or self._error()
                    break
                continue
            try:
                status = dll.PQresultStatus(result)
                if status == _PGRES_PIPELINE_SYNC:
                    break
                if status == _PGRES_TUPLES_OK and failure is None and dll.PQntuples(result):
                    value = dll.PQgetvalue(result, 0, 0)
                    yield ctypes.string_at(value, dll.PQgetlength(result, 0, 0))
                elif status == _PGRES_FATAL_ERROR and failure is None:
                    failure = self._result_error(result)
                    if dll.PQstatus(handle) != _CONNECTION_OK:
                        break  # the connection is gone: no sync will come
            finally:
                dll.PQclear(result)
        if failure is not None:
            raise failure

    def _error(self) -> LibpqError:
        return LibpqError(_text(self._dll.PQerrorMessage(self._handle)))

    def _result_error(self, result: int) -> LibpqError:
        sqlstate = self._dll.PQresultErrorField(result, _PG_DIAG_SQLSTATE)
        primary = self._dll.PQresultErrorField(result, _PG_DIAG_MESSAGE_PRIMARY)
        message = _text(primary) if primary else _text(self._dll.PQresultErrorMessage(result))
        return LibpqError(
            message or "unknown error", sqlstate=sqlstate.decode() if sqlstate else None
        )


def _text(message: bytes | None) -> str:
    """libpq's message as text, without its severity prefix and trailing newline."""
    text = (message or b"").decode(errors="replace").strip()
    for prefix in ("ERROR:  ", "FATAL:  "):
        text = text.removeprefix(prefix)
    return text
