"""Every connection of ours gives up on a dead peer (``orchestrator.db.connect.connect``).

A network that dies mid-query, as when a NAT entry is dropped, answers nothing, not even an
ACK: without a bound of its own, a validate or migrate read waits on the socket for libpq's
defaults (~15 min of retransmits, or 2 h before the first keepalive probe). The monitor's SQL
check over the same dead network: ``tests/test_monitor.py``.
"""

from __future__ import annotations

import os
import socket

import psycopg

from orchestrator.db.connect import connect
from tests.dead_network import run_over_dead_network


def test_a_read_fails_when_the_network_dies_mid_query(database_url: str) -> None:
    def read(url: str) -> object:
        with connect(url, dead_peer_s=1) as conn:
            return conn.execute("SELECT 1 /* dead network */").fetchone()

    outcome = run_over_dead_network(database_url, b"dead network", read)
    assert outcome.cut, "the query never reached the dead network"
    assert outcome.finished, "the read is still waiting on the dead network"
    assert isinstance(outcome.error, psycopg.OperationalError), outcome
    assert "timed out" in str(outcome.error)


def test_every_connection_carries_the_bound(database_url: str) -> None:
    # Read back from the socket itself: what the kernel applies, not what was asked for.
    with connect(database_url) as conn, socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        user_timeout = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    assert keepalive == 1
    assert 0 < idle * 1000 < user_timeout  # probes start before the bound, which is set


def test_a_statement_may_run_longer_than_the_bound(database_url: str) -> None:
    # The probes are answered by the server's kernel while the server works: a migration's
    # long statement is not cut short, only a peer that answers nothing at all.
    with connect(database_url, dead_peer_s=1) as conn:
        assert conn.execute("SELECT 1 FROM pg_sleep(3)").fetchone() == (1,)
