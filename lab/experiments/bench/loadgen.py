"""A small HTTP load generator, run as a process of its own: ``python -m lab.experiments.bench.loadgen``.

Closed loop: ``--concurrency`` clients, each on its own keep-alive HTTP/1.1 connection, send the
next request as soon as the previous answer is read, for ``--warmup`` + ``--duration`` seconds.
Only answers completed inside the measured window (after the warm-up) count. Plain asyncio
streams and a hand-written request, no HTTP client library, so that the generator costs little
CPU next to the server it measures (it reports its own CPU time, ``client_cpu_s``).

Prints one JSON object on stdout::

    {"concurrency": 8, "duration_s": 10.0, "requests": 12345, "ok": 12345, "errors": 0,
     "statuses": {"202": 12345}, "rps": 1234.5,
     "latency_ms": {"n", "p50", "p95", "p99", "max", "mean"}, "client_cpu_s": 3.1}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

from lab.experiments.bench.stats import latency_ms


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Client:
    def __init__(self, host: str, port: int, request: bytes, timeout: float, expect: int) -> None:
        self.host, self.port, self.request, self.timeout, self.expect = host, port, request, timeout, expect
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:  # noqa: BLE001
                pass
        self.reader = self.writer = None

    async def one(self) -> int:
        """Send one request, read the answer; returns the HTTP status."""
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length = 0
        close = False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            await self._close()
        return status

    async def loop(self, measure_from: float, stop_at: float, results: dict) -> None:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                break
            try:
                status = await asyncio.wait_for(self.one(), self.timeout)
            except Exception as exc:  # noqa: BLE001 - a transport error is a counted error
                await self._close()
                status = None
                error = type(exc).__name__
            finished = time.perf_counter()
            if started < measure_from or finished > stop_at:
                continue
            key = str(status) if status is not None else error
            results["statuses"][key] = results["statuses"].get(key, 0) + 1
            if status == self.expect:
                results["latencies"].append(finished - started)
            else:
                results["errors"] += 1
                if status is None:
                    await asyncio.sleep(0.05)  # a refused connection must not spin
        await self._close()


async def run(
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    warmup: float,
    timeout: float,
    headers: list[str],
    expect: int,
) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = build_request(host, port, path, body, headers)
    results: dict = {"statuses": {}, "latencies": [], "errors": 0}
    now = time.perf_counter()
    measure_from, stop_at = now + warmup, now + warmup + duration
    clients = [Client(host, port, request, timeout, expect) for _ in range(concurrency)]
    cpu_before = os.times()
    await asyncio.gather(*(c.loop(measure_from, stop_at, results) for c in clients))
    cpu_after = os.times()
    ok = len(results["latencies"])
    return {
        "concurrency": concurrency,
        "duration_s": duration,
        "warmup_s": warmup,
        "requests": ok + results["errors"],
        "ok": ok,
        "errors": results["errors"],
        "statuses": results["statuses"],
        "rps": round(ok / duration, 1),
        "latency_ms": latency_ms(results["latencies"]),
        "client_cpu_s": round((cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.experiments.bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/tasks/noop")
    parser.add_argument("--body", default="{}", help="JSON request body")
    parser.add_argument("--concurrency", "-c", type=int, default=8)
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request")
    parser.add_argument("--header", "-H", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--expect", type=int, default=202, help="the status that counts as success")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("concurrency must be >= 1 and duration > 0")
    out = asyncio.run(
        run(
            args.url,
            args.body.encode(),
            args.concurrency,
            args.duration,
            args.warmup,
            args.timeout,
            args.header,
            args.expect,
        )
    )
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
