#!/usr/bin/python3
"""delay_proxy.py - a TCP proxy that adds a fixed one-way delay to each
direction and counts round trips, for benchmarking remote sandboxes at
real-world latency on a kernel without netem (issue #19).

    tests/bench/delay_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
        [--listen-host 127.0.0.1] [--gap-ms G] [--status FILE] [--port-file FILE]

LISTEN_PORT 0 picks a free port; --port-file gets the chosen port written to
it (atomically) once the proxy listens.  DELAY_MS is one way: 10 gives a
20 ms round trip.

Delay: every chunk read from one side is stamped with its arrival time and
written to the other side at arrival + delay, in arrival order (one FIFO and
one sender per direction and connection), so a byte stream is only shifted
in time, never reordered.  An end of stream (half-close) is delayed the same
way.  Nothing limits bandwidth: a sender that falls behind just sends late.
Reading pauses while more than 64 MiB wait in one direction.

Round trips: per direction the proxy counts bytes, chunks and "bursts": a
burst is data that arrives after that direction was quiet (across all
connections) for more than the gap, by default half the one-way delay.  A
request that must wait for the previous reply arrives a whole round trip
after it, while requests sent without waiting arrive together, so the
client-to-server bursts of an operation approximate the round trips it paid
for.  Client think time longer than the gap also counts as a burst, so read
the counts as an upper bound, most trustworthy at large delays.  At delay 0
the gap is 0.5 ms unless --gap-ms says otherwise, and bursts mean little.

"late_ms_avg" in the counters is how much later than due, on average, a
chunk was sent (timer granularity, a loaded machine): the real one-way
delay is DELAY_MS plus about that.

Counters are written as JSON to --status FILE (atomically, with a sequence
number "seq" that grows by one per write) on SIGUSR1, and at exit (SIGTERM,
SIGINT); without --status they go to stderr.  Python standard library only.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time

QUEUE_MAX = 64 << 20


class Direction:
    """Counters of one direction, shared by all connections."""

    def __init__(self, gap):
        self.gap = gap
        self.bytes = 0
        self.chunks = 0
        self.bursts = 0
        self.last = None

    def note(self, now, n):
        if self.last is None or now - self.last > self.gap:
            self.bursts += 1
        self.last = now
        self.bytes += n
        self.chunks += 1

    def as_dict(self):
        return {"bytes": self.bytes, "chunks": self.chunks, "bursts": self.bursts}


class Proxy:
    def __init__(self, target_host, target_port, delay, gap, status):
        self.target = (target_host, target_port)
        self.delay = delay
        self.up = Direction(gap)    # client -> server
        self.down = Direction(gap)  # server -> client
        self.status = status
        self.seq = 0
        self.late = 0.0
        self.sends = 0
        self.connections = 0
        self.open = 0

    def snapshot(self):
        self.seq += 1
        return {"seq": self.seq, "time": time.time(), "delay_ms": self.delay * 1000,
                "gap_ms": self.up.gap * 1000, "connections": self.connections,
                "open": self.open,
                "late_ms_avg": round(self.late / self.sends * 1000, 3) if self.sends else 0.0, "up": self.up.as_dict(), "down": self.down.as_dict()}

    def write_status(self):
        text = json.dumps(self.snapshot()) + "\n"
        if not self.status:
            sys.stderr.write(text)
            return
        tmp = f"{self.status}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.status)

    async def pipe(self, reader, writer, counts):
        """Copies reader to writer, each chunk at its arrival + delay."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()
        queued = 0
        room = asyncio.Event()
        room.set()

        async def sender():
            nonlocal queued
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                # how late the timer and a loaded machine made us: the
                # real delay is delay + late_ms_avg
                self.late += max(0.0, loop.time() - due)
                self.sends += 1
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                queued -= len(data)
                if queued <= QUEUE_MAX:
                    room.set()
                await writer.drain()

        task = asyncio.create_task(sender())
        try:
            while True:
                await room.wait()
                data = await reader.read(1 << 16)
                now = loop.time()
                if not data:
                    break
                counts.note(now, len(data))
                queued += len(data)
                if queued > QUEUE_MAX:
                    room.clear()
                queue.put_nowait((now + self.delay, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((loop.time() + self.delay, None))
        try:
            await task
        except (ConnectionError, OSError):
            pass

    async def handle(self, creader, cwriter):
        self.connections += 1
        self.open += 1
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError as e:
            print(f"delay_proxy: cannot reach {self.target[0]}:{self.target[1]}: {e}", file=sys.stderr)
            cwriter.close()
            self.open -= 1
            return
        for w in (cwriter, swriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(self.pipe(creader, swriter, self.up),
                                 self.pipe(sreader, cwriter, self.down))
        except asyncio.CancelledError:
            pass  # the proxy is exiting
        finally:
            for w in (cwriter, swriter):
                w.close()
            self.open -= 1


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("listen_port", type=int)
    ap.add_argument("target_host")
    ap.add_argument("target_port", type=int)
    ap.add_argument("delay_ms", type=float, help="one-way delay, each direction")
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--gap-ms", type=float, help="quiet time that starts a burst (default delay/2, 0.5 at delay 0)")
    ap.add_argument("--status", help="JSON counters written here on SIGUSR1 and at exit")
    ap.add_argument("--port-file", help="the listening port is written here once ready")
    a = ap.parse_args()
    gap = a.gap_ms if a.gap_ms is not None else (a.delay_ms / 2 if a.delay_ms > 0 else 0.5)
    proxy = Proxy(a.target_host, a.target_port, a.delay_ms / 1000, gap / 1000, a.status)
    server = await asyncio.start_server(proxy.handle, a.listen_host, a.listen_port)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, proxy.write_status)
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, done.set)
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(a.port_file + ".tmp", a.port_file)
    else:
        print(f"delay_proxy: 127.0.0.1:{port} -> {a.target_host}:{a.target_port}, "
              f"{a.delay_ms:g} ms each way", file=sys.stderr)
    await done.wait()
    server.close()
    proxy.write_status()


if __name__ == "__main__":
    asyncio.run(main())
