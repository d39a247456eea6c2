"""A TCP proxy on loopback that adds latency and counts request/response round trips.

It stands between a client and PostgreSQL the way a distant network does. Every burst of
bytes (what one ``recv`` returns) is held ``round_trip_delay / 2`` seconds in each direction
before it is forwarded, so each request/response exchange costs ``round_trip_delay`` more.
Bursts are scheduled at arrival time plus the one-way delay, in order, so bytes that follow
each other closely are not delayed twice: the proxy models a long pipe, not a slow one.

The proxy sees the wire, so it also counts round trips honestly: a round trip is a burst from
the client answered by a burst from the server, i.e. each time the server starts talking
after the client did. Bytes the client pipelines without waiting count once. Connection
set-up (the SSL request and the start-up message) is counted too; subtract
:meth:`LatencyProxy.handshake_round_trips` to get the SQL round trips alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

CHUNK = 65_536
T = TypeVar("T")


@dataclass(frozen=True)
class Traffic:
    """What went through the proxy since it started or was last reset."""

    connections: int
    round_trips: int
    client_bytes: int
    server_bytes: int


class _Counters:
    """Mutable counters; touched only on the proxy's event-loop thread."""

    def __init__(self) -> None:
        self.connections = 0
        self.round_trips = 0
        self.client_bytes = 0
        self.server_bytes = 0

    def snapshot(self) -> Traffic:
        return Traffic(self.connections, self.round_trips, self.client_bytes, self.server_bytes)


class _Exchange:
    """Who spoke last on one proxied connection, to count round trips."""

    def __init__(self, counters: _Counters) -> None:
        self.counters = counters
        self.client_spoke = False

    def client_burst(self, size: int) -> None:
        self.counters.client_bytes += size
        self.client_spoke = True

    def server_burst(self, size: int) -> None:
        self.counters.server_bytes += size
        if self.client_spoke:  # the server answers: one round trip completed
            self.counters.round_trips += 1
            self.client_spoke = False


def upstream_of(url: str) -> tuple[str, int]:
    """The host and port a ``postgresql://`` URL names."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def through_port(url: str, port: int) -> str:
    """``url`` with its host and port replaced by a proxy's on loopback."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))


class _Front(ABC):
    """What both proxies offer a client: their URL, and counting a connection's set-up."""

    port: int

    @abstractmethod
    def start(self) -> None:
        """Start listening (``self.port``)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop listening and end what serves the proxy."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        return through_port(url, self.port)

    @abstractmethod
    def reset(self) -> Traffic:
        """The counters now, then zero them."""

    def handshake_round_trips(self, url: str) -> int:
        """Round trips of opening (and closing) one connection through the proxy."""
        self.reset()
        with psycopg.connect(self.url(url)):
            pass
        return self.reset().round_trips


class LatencyProxy(_Front):
    """Forward 127.0.0.1:<port> to ``upstream``, adding ``round_trip_delay`` per exchange.

    Runs its own asyncio loop in a daemon thread; use it as a context manager.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, round_trip_delay: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.round_trip_delay = round_trip_delay
        self.port = 0
        self._counters = _Counters()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        # The connections being served. The event loop keeps only weak references to tasks:
        # a connection waiting on a socket nobody else references could be collected
        # mid-flight ("Task was destroyed but it is pending").
        self._serving: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, url: str, *, round_trip_delay: float) -> LatencyProxy:
        """A proxy in front of the server a ``postgresql://`` URL names."""
        return cls(*upstream_of(url), round_trip_delay=round_trip_delay)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a free loopback port (``self.port``)."""
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop listening, drop open connections and end the loop's thread."""
        if self._server is not None:
            server = self._server
            self._server = None

            async def close() -> None:
                server.close()
                grace = 1 + self.round_trip_delay  # let closing connections flush
                me = asyncio.current_task()
                while others := [t for t in asyncio.all_tasks() if t is not me and not t.done()]:
                    _, pending = await asyncio.wait(others, timeout=grace)
                    for task in pending:
                        task.cancel()
                    # Let the cancelled tasks finish before the loop stops, or they are
                    # destroyed while pending.
                    await asyncio.gather(*pending, return_exceptions=True)
                    grace = 0.1

            self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        # A connection accepted while stopping may have left a task behind: end it here, on
        # the stopped loop, rather than let the loop be closed under it.
        leftovers = asyncio.all_tasks(self._loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            self._loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        self._loop.close()

    # -- counters ----------------------------------------------------------------------------

    def traffic(self) -> Traffic:
        """The counters now."""
        return self._call(self._snapshot())

    def reset(self) -> Traffic:
        """The counters now, then zero them."""

        async def swap() -> Traffic:
            before = self._counters.snapshot()
            self._counters.__init__()  # type: ignore[misc]  # in place: connections hold it
            return before

        return self._call(swap())

    # -- internals ---------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _snapshot(self) -> Traffic:
        return self._counters.snapshot()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        counters = self._counters
        counters.connections += 1
        exchange = _Exchange(counters)
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        one_way = self.round_trip_delay / 2
        try:
            await asyncio.gather(
                _pump(client_r, server_w, one_way, exchange.client_burst),
                _pump(server_r, client_w, one_way, exchange.server_burst),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # the proxy is stopping; a task's end is not an error
        finally:
            server_w.close()
            client_w.close()


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    on_burst: Callable[[int], None],
) -> None:
    """Copy ``reader`` to ``writer``, each burst ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def deliver() -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    delivery = asyncio.ensure_future(deliver())
    try:
        try:
            while data := await reader.read(CHUNK):
                on_burst(len(data))
                queue.put_nowait((loop.time() + delay, data))
        except OSError:
            pass
        queue.put_nowait(None)
        with contextlib.suppress(OSError):
            await delivery
    finally:
        if not delivery.done():  # the proxy is stopping: end the delivery before the loop
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivery


class ProxyProcess(_Front):
    """A :class:`LatencyProxy` in a process of its own, with the same interface.

    Measuring a Python client in the process that runs the proxy's event loop measures the
    client's interpreter lock too: while the client computes, the proxy's thread waits to
    forward the next burst, and a 3 MB answer in 64 KB bursts then costs a third of a second
    more than the network would. A real distant server shares no lock with us, so the
    in-process latency rows use this one.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, round_trip_delay: float) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_proxy_process,
            args=(child, upstream_host, upstream_port, round_trip_delay),
            daemon=True,
        )
        self.port = 0

    @classmethod
    def for_url(cls, url: str, *, round_trip_delay: float) -> ProxyProcess:
        """A proxy process in front of the server a ``postgresql://`` URL names."""
        return cls(*upstream_of(url), round_trip_delay=round_trip_delay)

    def start(self) -> None:
        """Start the process; it answers with the port it listens on."""
        self._process.start()
        self.port = int(self._ask("port"))

    def stop(self) -> None:
        """Stop the proxy and wait for its process."""
        with contextlib.suppress(OSError, EOFError):
            self._ask("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()

    def traffic(self) -> Traffic:
        """The counters now."""
        return Traffic(*self._ask("traffic"))

    def reset(self) -> Traffic:
        """The counters now, then zero them."""
        return Traffic(*self._ask("reset"))

    def _ask(self, command: str) -> Any:
        self._conn.send(command)
        if not self._conn.poll(30):
            raise TimeoutError(f"the proxy process did not answer {command!r}")
        return self._conn.recv()


def _proxy_process(
    conn: Connection, upstream_host: str, upstream_port: int, round_trip_delay: float
) -> None:
    """The proxy process: a :class:`LatencyProxy` serving commands from ``conn``."""
    with LatencyProxy(upstream_host, upstream_port, round_trip_delay=round_trip_delay) as proxy:
        while True:
            try:
                command = conn.recv()
            except EOFError:  # the parent is gone
                return
            if command == "port":
                conn.send(proxy.port)
            elif command == "traffic":
                conn.send(astuple(proxy.traffic()))
            elif command == "reset":
                conn.send(astuple(proxy.reset()))
            elif command == "stop":
                conn.send(None)
                return
