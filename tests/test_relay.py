"""libvm.testing.Relay on loopback, no root: latency each way, order, half-close, cut, stall."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from libvm.testing import Relay


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A TCP echo server on loopback; echoes until the client half-closes, then closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[:2]
    finally:
        server.close()


def rtt(sock: socket.socket) -> float:
    started = time.perf_counter()
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    return time.perf_counter() - started


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end reset or closed the connection (a byte sent gets no echo)."""
    try:
        sock.sendall(b"y")
        return sock.recv(1) == b""
    except OSError:
        return True


def test_adds_the_delay_each_way(echo: tuple[str, int]) -> None:
    with Relay(echo, delay_ms=20) as relay, socket.create_connection(relay.address) as sock:
        times = sorted(rtt(sock) for _ in range(5))
        assert 0.040 <= times[2] < 0.2
        relay.delay_ms = 0
        assert sorted(rtt(sock) for _ in range(5))[2] < 0.02


def test_keeps_order_and_passes_half_close_on(echo: tuple[str, int]) -> None:
    payload = os.urandom(2_000_000)
    with Relay(echo, delay_ms=5) as relay, socket.create_connection(relay.address) as sock:

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        while chunk := sock.recv(65536):  # ends when the server's close comes through the relay
            got += chunk
        sender.join()
    assert bytes(got) == payload


def test_cut_resets_connections_and_refuses_new_ones_until_restored(echo: tuple[str, int]) -> None:
    with Relay(echo) as relay:
        sock = socket.create_connection(relay.address)
        rtt(sock)
        assert relay.connections == 1
        relay.cut()
        assert relay.is_cut and relay.connections == 0
        assert closed_by_peer(sock)
        sock.close()
        with socket.create_connection(relay.address) as refused:
            assert closed_by_peer(refused)
        relay.restore()
        with socket.create_connection(relay.address) as again:
            rtt(again)


def test_stall_holds_bytes_until_restored(echo: tuple[str, int]) -> None:
    with Relay(echo) as relay, socket.create_connection(relay.address) as sock:
        relay.stall()
        assert relay.is_stalled
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(4)
        relay.restore()
        sock.settimeout(5)
        assert sock.recv(4) == b"held"


def test_stop_is_idempotent_and_a_negative_delay_is_refused(echo: tuple[str, int]) -> None:
    relay = Relay(echo)
    relay.stop()
    relay.start()
    assert relay.running() and relay.port > 0
    relay.stop()
    relay.stop()
    assert not relay.running()
    with pytest.raises(ValueError):
        Relay(echo, delay_ms=-1)
