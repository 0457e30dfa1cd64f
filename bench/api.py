"""Benchmark: authenticated GET /api/v1/watches and GET /api/v1/posts with 100,000 posts in the database.

Seeds a temporary SQLite database (and PostgreSQL too when $AIPOSTER_BENCH_PG names a database to
fill; it is emptied first), serves the API from one uvicorn process, and drives it over loopback from this
process with several concurrent connections, for a bounded number of requests and seconds.

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


def serve(cfg) -> None:
    import uvicorn

    from aiposter.api.app import create_app
    from aiposter.app import open_app

    app = open_app(cfg, migrate=False)
    uvicorn.run(create_app(app), host="127.0.0.1", port=cfg.api.port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def drive(base: str, token: str, path: str, total: int, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up
            await client.get(path)
        remaining = total

        async def worker():
            nonlocal remaining, errors
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                t0 = time.perf_counter()
                r = await client.get(path)
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"n": len(latencies), "rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "errors": errors}


def run(label: str, cfg, args) -> None:
    print(f"{label}:")
    seed(cfg, args.posts)
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(cfg,), daemon=True)
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
        for path in ("/api/v1/watches", "/api/v1/posts", "/api/v1/posts?limit=50&cursor=50000",
                     "/api/v1/posts?status=failed"):
            r = asyncio.run(drive(base, token, path, args.requests, args.concurrency, args.seconds))
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
    args = parser.parse_args()
    print(f"ai-poster API benchmark: one uvicorn process, {args.concurrency} concurrent connections, "
          f"up to {args.requests} requests or {args.seconds:g} s per endpoint, default page size (50)")
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
