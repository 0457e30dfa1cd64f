"""Benchmark: authenticated GET /api/v1/watches and GET /api/v1/posts with 100,000 posts in the database.

Seeds a temporary SQLite database (and PostgreSQL too when $AIPOSTER_BENCH_PG names a database to
fill; it is emptied first: never point it at a database others use), serves the API from one uvicorn
process, and drives it over loopback from this process with several concurrent connections, for a bounded
number of requests and seconds.

The ceiling is served by the same process and framework, beside the real routes: async FastAPI routes
under /ceiling/ that return the same JSON (checked before timing) from one indexed raw SQL query, with no
authentication, no ORM and no validation. Each real endpoint and its ceiling are driven alternately, in
short rounds, so machine load drifts affect both alike; the ratio is what to compare between runs.

    .venv/bin/python bench/api.py [--posts 100000] [--requests 3000] [--concurrency 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

PASSWORD = "bench password 123"


def config(data: Path, url: str, port: int):
    from aiposter.config import Config

    return Config.model_validate({
        "db": {"url": url}, "daemon": {"data_dir": str(data)}, "quickstart": {"enabled": False},
        "sources": {"local_roots": [str(data / "{user_id}")]}, "log": {"level": "WARNING"},
        "api": {"host": "127.0.0.1", "port": port, "access_log": False}})


def seed(cfg, n_posts: int) -> None:
    from aiposter.app import open_app
    from aiposter.core.models import Post, PostTarget, utcnow
    from aiposter.db import session_scope
    from aiposter.services import users, watches

    app = open_app(cfg)
    try:
        with session_scope(app.engine) as s:
            user = users.create_user(s, "bench@example.com", PASSWORD)
            other = users.create_user(s, "other@example.com", PASSWORD)
            ids = [watches.create_watch(s, cfg, u, watches.WatchSpec(folder=str(cfg.data_dir), name=f"w{i}"),
                                         allow_any_folder=True).id
                   for i, u in enumerate([user] * 10 + [other] * 10)]
            uid, oid = user.id, other.id
        now, statuses = utcnow(), ["published", "failed", "partial", "skipped"]
        with app.engine.begin() as conn:
            for start in range(0, n_posts, 10_000):
                rows = [{"user_id": uid if i % 10 else oid, "watch_id": ids[i % 20], "source_ref": f"img{i}.jpg",
                         "file_name": f"img{i}.jpg", "folder_name": "bench", "description": "",
                         "status": statuses[i % 4], "step_attempts": 0, "next_attempt_at": now,
                         "captions": {"instagram": f"caption {i}"}, "hashtags": [], "alt_text": "", "usage": {},
                         "created_at": now - timedelta(seconds=n_posts - i), "updated_at": now}
                        for i in range(start, min(start + 10_000, n_posts))]
                conn.execute(sa.insert(Post), rows)
            first = conn.execute(sa.select(sa.func.min(Post.id))).scalar_one()
            conn.execute(sa.insert(PostTarget), [{"post_id": first + i, "platform": "outbox", "status": "published",
                                                  "attempts": 1, "next_attempt_at": now, "updated_at": now}
                                                 for i in range(n_posts)])
    finally:
        app.close()
    print(f"  seeded {n_posts:,} posts ({n_posts * 9 // 10:,} for the benchmark user), 20 watches; "
          f"users {uid} and {oid}")
    return uid


ACTIVE = ("detected", "downloaded", "captioned", "publishing")
POSTS_SQL = ("SELECT id, watch_id, file_name, folder_name, source_ref, status, last_error, next_attempt_at, "
             "created_at, finished_at FROM post WHERE user_id = :uid ORDER BY id DESC LIMIT 50")
WATCH_COLUMNS = ("id, name, source, source_connection_id, folder, folder_name, interval_seconds, prompt_template, "
                 "captioner, backfill, maximum_age_hours, min_spacing_seconds, approval, review_ttl_hours, "
                 "schedule_tz, schedule_windows, daily_cap, include_subfolders, enabled, baseline_done, "
                 "last_poll_at, last_poll_error, next_poll_at, created_at")
WATCHES_SQL = (f"SELECT {WATCH_COLUMNS}, (SELECT string_agg(platform, ',') FROM watch_target t "
               "WHERE t.watch_id = w.id) AS targets FROM watch w WHERE user_id = :uid ORDER BY id")


def _ts(v):
    """A timestamp as the API renders it (UTC, seconds, 'Z'), from a datetime (PostgreSQL) or text (SQLite)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v[:10] + "T" + v[11:19] + "Z"
    return v.strftime("%Y-%m-%dT%H:%M:%SZ")


def add_ceiling(api, engine, uid: int) -> None:
    from fastapi import Response
    from pydantic_core import to_json

    watches_sql = sa.text(WATCHES_SQL.replace("string_agg(platform, ',')", "group_concat(platform, ',')")
                          if engine.dialect.name == "sqlite" else WATCHES_SQL)
    posts_sql = sa.text(POSTS_SQL)

    @api.get("/ceiling/posts")
    async def ceiling_posts():
        with engine.connect() as conn:
            rows = conn.execute(posts_sql, {"uid": uid}).all()
        items = [{"id": r[0], "watch_id": r[1], "file_name": r[2], "folder_name": r[3], "source_ref": r[4],
                  "status": r[5], "last_error": r[6], "waiting_for": None,
                  "next_attempt_at": _ts(r[7]) if r[5] in ACTIVE else None, "created_at": _ts(r[8]),
                  "finished_at": _ts(r[9])} for r in rows]
        return Response(to_json({"items": items, "next_cursor": rows[-1][0] if len(rows) == 50 else None}),
                        media_type="application/json")

    @api.get("/ceiling/watches")
    async def ceiling_watches():
        with engine.connect() as conn:
            result = conn.execute(watches_sql, {"uid": uid})
            keys, rows = list(result.keys()), result.all()
        out = []
        for r in rows:
            d = dict(zip(keys, r, strict=True))
            for k in ("last_poll_at", "next_poll_at", "created_at"):
                d[k] = _ts(d[k])
            d["targets"] = d["targets"].split(",") if d["targets"] else []
            d["status"] = "error" if d["last_poll_error"] else "active" if d["enabled"] else "paused"
            for k in ("backfill", "enabled", "baseline_done", "include_subfolders"):
                d[k] = bool(d[k])
            out.append(d)
        return Response(to_json(out), media_type="application/json")


def serve(cfg, uid: int, loop: str) -> None:
    import uvicorn

    from aiposter.api.app import create_app
    from aiposter.app import open_app

    app = open_app(cfg, migrate=False)
    api = create_app(app)
    add_ceiling(api, app.engine, uid)
    uvicorn.run(api, host="127.0.0.1", port=cfg.api.port, log_level="warning", access_log=False, loop=loop,
                http="auto")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Conn:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: a few microseconds per request, so the
    server, not the load generator (httpx costs ~1 ms of CPU per request), is what gets measured."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self.token = host, port, token

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Authorization: Bearer {self.token}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used (user + system, all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(base: str, token: str, paths: tuple[str, ...], total: int, concurrency: int, seconds: float,
                pid: int, rounds: int = 6) -> list[dict]:
    """Drive each path in turn for ``rounds`` short rounds (alternating), return their figures."""
    host, port = base.removeprefix("http://").split(":")
    conns = [Conn(host, int(port), token) for _ in range(concurrency)]
    for c in conns:
        await c.open()
    stats = [{"lat": [], "elapsed": 0.0, "errors": 0, "cpu": 0.0} for _ in paths]
    for path in paths:
        for _ in range(20):  # warm-up
            await conns[0].get(path)
    for _ in range(rounds):
        for path, st in zip(paths, stats, strict=True):
            remaining = total // rounds
            deadline = time.perf_counter() + seconds / rounds

            async def worker(conn, path=path, st=st, deadline=deadline):
                nonlocal remaining
                while remaining > 0 and time.perf_counter() < deadline:
                    remaining -= 1
                    t0 = time.perf_counter()
                    status, _ = await conn.get(path)
                    st["lat"].append(time.perf_counter() - t0)
                    st["errors"] += status != 200

            start, cpu = time.perf_counter(), server_cpu(pid)
            await asyncio.gather(*(worker(c) for c in conns))
            st["elapsed"] += time.perf_counter() - start
            st["cpu"] += server_cpu(pid) - cpu
    for c in conns:
        c.close()
    out = []
    for st in stats:
        q = statistics.quantiles(st["lat"], n=100)
        out.append({"n": len(st["lat"]), "rps": len(st["lat"]) / st["elapsed"], "p50": q[49] * 1000,
                    "p99": q[98] * 1000, "errors": st["errors"], "cpu_ms": st["cpu"] / len(st["lat"]) * 1000})
    return out


def run(label: str, cfg, args) -> None:
    print(f"{label}:")
    uid = seed(cfg, args.posts)
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(cfg, uid, args.loop), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{cfg.api.port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        token = httpx.post(f"{base}/api/v1/auth/login",
                           json={"email": "bench@example.com", "password": PASSWORD}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for path, ceiling in (("/api/v1/watches", "/ceiling/watches"), ("/api/v1/posts", "/ceiling/posts")):
            real, same = httpx.get(base + path, headers=auth).json(), httpx.get(base + ceiling).json()
            if real != same:
                raise SystemExit(f"the ceiling {ceiling} does not return what {path} returns:\n{real}\n{same}")
            r, c = asyncio.run(drive(base, token, (path, ceiling), args.requests, args.concurrency, args.seconds,
                                     proc.pid))
            for name, x in ((path, r), (ceiling, c)):
                print(f"  GET {name:<22} {x['rps']:7.0f} req/s   p50 {x['p50']:6.1f} ms   p99 {x['p99']:6.1f} ms"
                      f"   server CPU {x['cpu_ms']:.2f} ms/req   ({x['n']} requests, {x['errors']} errors)")
            print(f"  => {path}: {r['rps'] / c['rps']:.0%} of the ceiling's req/s; "
                  f"{c['cpu_ms'] / r['cpu_ms']:.0%} of its capacity per server CPU second (the figure that "
                  f"holds on a loaded machine)")
        for path in ("/api/v1/posts?limit=50&cursor=50000", "/api/v1/posts?status=failed"):
            (r,) = asyncio.run(drive(base, token, (path,), args.requests // 2, args.concurrency, args.seconds / 2,
                                     proc.pid))
            print(f"  GET {path:<40} {r['rps']:7.0f} req/s   p50 {r['p50']:6.1f} ms   p99 {r['p99']:6.1f} ms"
                  f"   ({r['n']} requests, {r['errors']} errors)")
    finally:
        proc.terminate()
        proc.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3000, help="per endpoint")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30, help="time limit per endpoint")
    parser.add_argument("--loop", default="asyncio", help="uvicorn event loop: asyncio (default) or uvloop")
    args = parser.parse_args()
    print(f"ai-poster API benchmark: one uvicorn process ({args.loop} loop), {args.concurrency} concurrent "
          f"connections, up to {args.requests} requests or {args.seconds:g} s per endpoint, default page size (50)")
    print(f"  machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        run("SQLite", config(data / "sqlite", f"sqlite:///{data}/bench.db", free_port()), args)
        pg = os.environ.get("AIPOSTER_BENCH_PG")
        if pg:
            engine = sa.create_engine(pg)
            with engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
            run("PostgreSQL", config(data / "pg", pg, free_port()), args)


if __name__ == "__main__":
    main()
