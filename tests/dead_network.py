"""A network path to the test server that dies mid-query, as when a NAT entry is dropped.

Once the client's bytes carry a marker, nothing passes any more, either way, and the client
is told nothing: no RST, no FIN, no ICMP error, not even the kernel's ACKs. A proxy in user
space cannot model that on its own: its kernel would go on acknowledging the client's data
and keepalive probes, which is what a live peer looks like. So the client's end lives in a
network namespace of its own, and at the marker the proxy takes that namespace's loopback
interface down: the client's packets then go nowhere.

The namespace is one thread's (unshare(CLONE_NEWNET) changes the calling thread only): the
code under test runs in that thread, while the proxy reaches the server from the test's own
namespace. Making a namespace takes CAP_SYS_ADMIN; without it the tests skip, saying so.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: A backstop, not a time limit: code that wrongly waits on the dead network is given up on
#: after this long (the network then comes back and hangs up), and its test fails on what it
#: saw instead of hanging. Code that detects the dead peer returns in a few seconds.
BACKSTOP_S = 60.0

CLONE_NEWNET = 0x40000000  # <sched.h>
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # <linux/sockios.h>, <net/if.h>
IFREQ = "16sh22x"  # struct ifreq (40 bytes): the interface's name, then ifr_flags

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """What the code run over the dead network did."""

    finished: bool  # it returned or raised before the backstop
    cut: bool  # the marker went by and the network died
    value: T | None = None
    error: BaseException | None = None


def set_loopback(sock: socket.socket, up: bool) -> None:
    """Bring the loopback interface of ``sock``'s network namespace up or down."""
    current = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0))
    flags = struct.unpack(IFREQ, current)[1]
    flags = flags | IFF_UP if up else flags & ~IFF_UP
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags))


def run_over_dead_network(server_url: str, marker: bytes, fn: Callable[[str], T]) -> Outcome[T]:
    """Call ``fn`` with a conninfo that reaches ``server_url``'s server (a TCP one) through a
    path that dies as soon as the client sends ``marker``, and say how it went."""
    params = conninfo_to_dict(server_url)
    server = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    ready, finished, cut, stop = (threading.Event() for _ in range(4))
    listening: list[socket.socket] = []
    held: list[socket.socket] = []  # the client's side of each connection, kept open
    pumps: list[threading.Thread] = []
    outcome: Outcome[T] = Outcome(finished=False, cut=False)
    refused: list[str] = []

    def client() -> None:
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            listener = socket.socket()  # in this thread's new namespace, as libpq's will be
            set_loopback(listener, True)  # a new namespace's loopback starts down
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listening.append(listener)
        except OSError as exc:
            refused.append(str(exc))
            return
        finally:
            ready.set()
        through = {**params, "host": "127.0.0.1", "port": str(listener.getsockname()[1])}
        through.pop("hostaddr", None)
        try:
            outcome.value = fn(make_conninfo("", **through))
        except BaseException as exc:  # the test judges it
            outcome.error = exc
        finished.set()

    def accept() -> None:
        while not stop.is_set():
            try:
                near, _ = listening[0].accept()
            except OSError:  # closed: the run is over
                return
            held.append(near)
            far = socket.create_connection(server)  # from this thread: the test's namespace
            pumps.append(threading.Thread(target=pump, args=(near, far), daemon=True))
            pumps[-1].start()

    def pump(near: socket.socket, far: socket.socket) -> None:
        with far:
            while not stop.is_set():
                for side in select.select([near, far], [], [], 0.1)[0]:
                    data = side.recv(65536)
                    if side is near and marker in data:
                        set_loopback(listening[0], False)  # nothing gets through any more
                        cut.set()
                        return  # the server's side hangs up; the client is told nothing
                    if not data:
                        return
                    (far if side is near else near).sendall(data)

    runner = threading.Thread(target=client, name="dead-network client", daemon=True)
    runner.start()
    ready.wait()
    if refused:
        pytest.skip(f"needs a network namespace of its own (CAP_SYS_ADMIN): {refused[0]}")
    proxy = threading.Thread(target=accept, name="dead-network proxy", daemon=True)
    proxy.start()
    outcome.finished = finished.wait(BACKSTOP_S)
    outcome.cut = cut.is_set()
    # The network comes back and hangs up, so that code still waiting ends too.
    stop.set()
    set_loopback(listening[0], True)
    listening[0].shutdown(socket.SHUT_RDWR)  # wakes accept(), which close() would not
    proxy.join()
    for thread in pumps:
        thread.join()
    for sock in [*held, listening[0]]:
        sock.close()
    runner.join(BACKSTOP_S)
    return outcome
