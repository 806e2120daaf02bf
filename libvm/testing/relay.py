"""A userspace TCP relay that delays every byte by a fixed time each way, and can cut its link.

The kernel here has no ``netem``, so latency for tests and benchmarks comes from
this relay instead: it listens on ``listen`` and forwards each connection to
``target``, holding every chunk it reads for ``delay_ms`` before writing it on.
Order is kept per direction and throughput is not limited, so a request and its
reply see ``2 * delay_ms`` more round-trip time than the link beneath.

:meth:`Relay.cut` resets every connection it carries and refuses new ones until
:meth:`Relay.restore`, so a test can lose the link to a daemon on purpose.
:meth:`Relay.stall` is the silent kind of loss: connections stay open but no
byte goes through (a call hangs, as behind a dead router) until
:meth:`Relay.restore`, when what was held is delivered in order.

The relay runs an asyncio loop in a daemon thread of the calling process; all
public methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from libvm.testing._service import Service

log = logging.getLogger("libvm.testing")

_CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a lost link or a dead peer would, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Relay(Service):
    """Forward TCP from ``listen`` to ``target``, ``delay_ms`` later each way; a context manager.

    ``uri`` is free for whoever builds the relay to name the libvirt URI that
    goes through it (see :meth:`libvm.testing.RemoteHypervisor.relay`).
    """

    def __init__(
        self,
        target: tuple[str, int],
        delay_ms: float = 0.0,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        uri: str | None = None,
    ) -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, not {delay_ms}")
        self.target = target
        self.delay_ms = float(delay_ms)
        self.uri = uri
        self._listen = listen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self._flowing: asyncio.Event | None = None
        self.address: tuple[str, int] = listen

    def __repr__(self) -> str:
        host, port = self.address
        return f"<Relay {host}:{port} -> {self.target[0]}:{self.target[1]}, {self.delay_ms:g} ms each way>"

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def connections(self) -> int:
        """How many connections the relay carries now."""
        return len(self._links)

    @property
    def is_cut(self) -> bool:
        return self._cut

    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Listen (in a daemon thread) and return once the port is bound."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        started: asyncio.Future[None] = loop.create_future()

        async def serve() -> None:
            try:
                self._server = await asyncio.start_server(self._handle, *self._listen)
            except BaseException as exc:
                started.set_exception(exc)
                return
            self._flowing = asyncio.Event()
            self._flowing.set()
            self.address = self._server.sockets[0].getsockname()[:2]
            started.set_result(None)

        def run() -> None:
            asyncio.set_event_loop(loop)
            serving = loop.create_task(serve())
            loop.run_forever()
            serving.cancel()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"libvm-relay->{self.target[0]}:{self.target[1]}",
                                        daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(started), 10), loop).result()
        except BaseException:
            self.stop()
            raise
        log.info("%r started", self)

    def stop(self) -> None:
        """Reset every connection, stop listening and end the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self._reset_all()
            # Let every connection's task see its reset and end, so none is pending when the loop closes.
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(RuntimeError):  # the loop already stopped
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._server = None

    def cut(self) -> None:
        """Reset every connection now and refuse new ones until :meth:`restore`: a lost link."""
        self._cut = True
        self._call(self._reset_all)
        log.info("%r cut", self)

    def stall(self) -> None:
        """Hold every byte in both directions (connections stay open) until :meth:`restore`."""
        self._call(lambda: self._flowing.clear() if self._flowing else None)
        log.info("%r stalled", self)

    @property
    def is_stalled(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    def restore(self) -> None:
        """Accept connections again after :meth:`cut`; deliver what :meth:`stall` held."""
        self._cut = False
        self._call(lambda: self._flowing.set() if self._flowing else None)

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            return

        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), loop).result(10)

    def _reset_all(self) -> None:
        for client, server in list(self._links):
            _reset(client)
            _reset(server)
        self._links.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._cut:
            _reset(client_writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.info("relay to %s:%d failed: %s", *self.target, exc)
            _reset(client_writer)
            return
        if self._cut:  # cut while we were connecting
            _reset(client_writer)
            _reset(server_writer)
            return
        link = (client_writer, server_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            _reset(client_writer)
            _reset(server_writer)
        finally:
            self._links.discard(link)
            client_writer.close()
            server_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy reader to writer, each chunk ``delay_ms`` after it was read; EOF is passed on."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                queue.put_nowait((loop.time() + self.delay_ms / 1000.0, data))
                if not data:
                    return

        reading = asyncio.create_task(pump())
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._flowing is not None:
                    await self._flowing.wait()
                if not data:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
