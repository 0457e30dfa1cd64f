"""Pipeline figures on the embedded defaults (SQLite, local source, template captioner, outbox).

    .venv/bin/python bench/pipeline.py [--files 200] [--idle-seconds 60] [--watches 1000] [--pg URL]

1. Throughput: N photos dropped into a watched folder, the real daemon (scheduler + workers) in a
   subprocess; files per second from the first detection to the last publication, for small photos
   (pipeline overhead) and 12 MP photos (decode/re-encode dominated).
2. Idle: the daemon with 10,000 watches (empty folders, 60 s interval): CPU use over a window, RSS, and
   how the polls spread over the interval (the goals: < 5 % of a core, < 200 MB, no burst each minute).
   On PostgreSQL the goal counts the daemon and the server processes serving its database (client
   backends and autovacuum workers found in pg_stat_activity, CPU read from /proc): printed apart and summed.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")


def write_config(tmp: Path, db_url: str, interval: int = 1, quickstart: bool = True) -> Path:
    cfg = tmp / "config.toml"
    lines = ["[db]", f"url = {json.dumps(db_url)}",
             "[daemon]", f"data_dir = {json.dumps(str(tmp / 'data'))}",
             "[watch_defaults]", "settle_seconds = 0.0",
             "[log]", "level = 'WARNING'",
             "[publishers.outbox]", f"directory = {json.dumps(str(tmp / 'outbox'))}",
             "[quickstart]", f"inbox = {json.dumps(str(tmp / 'inbox'))}", f"interval_seconds = {interval}",
             "backfill = true", f"enabled = {str(quickstart).lower()}", "[api]", "enabled = false"]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def daemon(cfg: Path) -> subprocess.Popen:
    """The daemon in a subprocess; its log goes to a file beside the config (an unread pipe would fill
    and block the daemon on its first few hundred warnings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")}
    return subprocess.Popen([sys.executable, "-m", "aiposter", "--config", str(cfg), "run", "--no-api"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(cfg.with_name("daemon.log"), "w"))


def photo(path: Path, size: tuple[int, int], rng: random.Random) -> None:
    w, h = size
    # A smooth gradient plus light noise compresses like a photo (pure noise would be a worst case).
    base = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    noise = Image.frombytes("RGB", (w // 8, h // 8), rng.randbytes((w // 8) * (h // 8) * 3)).resize((w, h))
    Image.blend(base, noise, 0.25).save(path, "JPEG", quality=90)


def throughput(db_url_for, files: int, size: tuple[int, int], label: str) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        inbox = tmp / "inbox"
        inbox.mkdir()
        sample = tmp / "sample.jpg"
        photo(sample, size, rng)
        for i in range(files):
            # Every file a different photo (the same bytes are posted once per watch): the sample with a
            # distinct trailer after its end-of-image marker, which decoders ignore.
            (inbox / f"p{i:05d}.jpg").write_bytes(sample.read_bytes() + f"{i:08d}".encode())
        url = db_url_for(tmp)
        engine = sa.create_engine(url)
        xacts = _xacts(engine)
        proc = daemon(write_config(tmp, url))
        try:
            deadline = time.time() + 900
            while time.time() < deadline:
                try:
                    with engine.connect() as c:
                        done = c.execute(sa.text("SELECT count(*) FROM post WHERE status IN ('published', "
                                                 "'failed', 'partial', 'skipped')")).scalar()
                        first, last = c.execute(sa.text(
                            "SELECT min(created_at), max(finished_at) FROM post")).one()
                except sa.exc.DBAPIError:
                    done = 0
                if done >= files:
                    break
                time.sleep(0.2)
            with engine.connect() as c:
                first, last = c.execute(sa.text("SELECT min(created_at), max(finished_at) FROM post")).one()
            xacts = _xacts(engine) - xacts if xacts is not None else None
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            engine.dispose()
        if isinstance(first, str):
            from datetime import datetime

            first, last = datetime.fromisoformat(first), datetime.fromisoformat(last)
        secs = (last - first).total_seconds()
        per_min = files / secs * 60
        tx = f"  ~{xacts / files:.1f} commits/photo (whole daemon, incl. ticks)" if xacts is not None else ""
        goal = f"  goal 600/min: {per_min / 600:.2f}x" if "640x480" in label else ""
        print(f"  {label:<34} {files:>5} files  {secs:7.2f} s  {files / secs:8.1f} files/s = {per_min:6.0f}/min"
              f"{goal}{tx}")


def transactions(db_url_for, files: int, label: str) -> None:
    """Commits and statements per photo for the steps alone (poll, download, caption, publish), counted
    with SQLAlchemy events on the engine, the pipeline driven in this process without the scheduler (its
    ticks and lease renewals are the whole-daemon figure above)."""
    from collections import Counter

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import drain

    from aiposter.app import ensure_quickstart, open_app
    from aiposter.config import Config
    from aiposter.core.models import Post, Watch, utcnow
    from aiposter.core.pipeline import Context
    from aiposter.db import session_scope

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = Config.model_validate({
            "db": {"url": db_url_for(tmp)}, "daemon": {"data_dir": str(tmp / "data")},
            "watch_defaults": {"settle_seconds": 0.0}, "log": {"level": "WARNING"},
            "publishers": {"outbox": {"directory": str(tmp / "outbox")}}, "api": {"enabled": False},
            "quickstart": {"inbox": str(tmp / "inbox"), "interval_seconds": 1, "backfill": True, "enabled": True}})
        app = open_app(cfg, migrate=True)
        ensure_quickstart(app)
        ctx = Context(cfg, app.engine, owner="bench", keyring=app.keyring)
        drain(ctx)
        sample = tmp / "sample.jpg"
        photo(sample, (640, 480), random.Random(7))
        for i in range(files):
            (tmp / "inbox" / f"p{i:05d}.jpg").write_bytes(sample.read_bytes() + f"{i:08d}".encode())
        with session_scope(app.engine) as s:
            s.execute(sa.update(Watch).values(next_poll_at=utcnow()))
        n = Counter()
        sa.event.listen(app.engine, "commit", lambda conn: n.update(["commit"]))
        sa.event.listen(app.engine, "before_cursor_execute", lambda *a: n.update(["statement"]))
        drain(ctx, max_rounds=10_000)
        with session_scope(app.engine) as s:
            done = s.execute(sa.select(sa.func.count()).select_from(Post).where(Post.status == "published")).scalar()
        app.close()
    print(f"  {label:<34} {done} of {files} published: {n['commit'] / files:.1f} commits and "
          f"{n['statement'] / files:.1f} statements per photo (steps only; before this lever: 16.3 commits)")


def _xacts(engine) -> int | None:
    """Committed transactions in this PostgreSQL database so far (pg_stat_database), None on SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as c:
        c.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return c.execute(sa.text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                                 )).scalar()


def proc_stat(pid: int) -> tuple[float, int]:
    if not Path(f"/proc/{pid}/status").exists() or "VmRSS" not in Path(f"/proc/{pid}/status").read_text():
        raise SystemExit(f"the daemon (pid {pid}) is not running")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return cpu, rss_kb


class Backends:
    """CPU seconds of the PostgreSQL server processes serving one database: every pg_stat_activity row whose
    datname is that database (the daemon's client backends, autovacuum workers), this connection's own
    backend excluded, read from /proc (the server runs on this machine). Sampled every second, so a
    backend that starts within the window is counted from its start, and one that ends loses at most a
    second's CPU."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.conn = self.engine.connect()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self.started = False

    def sample(self) -> None:
        rows = self.conn.execute(sa.text(
            "SELECT pid, backend_type FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")).all()
        for pid, kind in rows:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended since the query
            cpu = (int(fields[11]) + int(fields[12])) / CLK
            self.first.setdefault(pid, cpu if not self.started else 0.0)
            self.last[pid], self.kinds[pid] = cpu, kind
        self.started = True

    def cpu(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def _first_round(url: str, watches: int, deadline: float) -> float:
    """Wait (bounded) until every watch has taken its baseline; returns the seconds it took."""
    engine, start = sa.create_engine(url, poolclass=sa.pool.NullPool), time.time()
    try:
        while time.time() < deadline:
            with engine.connect() as c:
                if c.execute(sa.text("SELECT count(*) FROM watch WHERE baseline_done")).scalar() >= watches:
                    break
            time.sleep(1)
    finally:
        engine.dispose()
    return time.time() - start


def idle(db_url_for, watches: int, window: float, interval: int, label: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        url = db_url_for(tmp)
        cfg = write_config(tmp, url, interval=interval)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")}
        subprocess.run([sys.executable, "-m", "aiposter", "--config", str(cfg), "migrate"], env=env,
                       check=True, capture_output=True)
        # Seed users and watches directly: the CLI would take minutes for 1,000 of them.
        engine = sa.create_engine(url)
        folders = tmp / "folders"
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO user_account (email, display_name, role, disabled, processing_paused,"
                              " brand_voice, default_hashtags, created_at, updated_at) VALUES ('b@x', 'b',"
                              " 'user', false, false, '', '[]', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            uid = c.execute(sa.text("SELECT id FROM user_account WHERE email='b@x'")).scalar()
            for i in range(watches):
                f = folders / f"w{i % 100}"  # 100 empty folders shared by the watches
                f.mkdir(parents=True, exist_ok=True)
                wid = c.execute(sa.text(
                    "INSERT INTO watch (user_id, name, source, folder, folder_name, interval_seconds, backfill,"
                    " maximum_age_hours, min_spacing_seconds, enabled, baseline_done, next_poll_at, created_at,"
                    " updated_at, folder_set_by_admin) VALUES (:u, :n, 'local', :f, :n, :i, false, 0, 0, true, false,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, true) RETURNING id"),
                    {"u": uid, "n": f"w{i}", "f": str(f), "i": interval}).scalar()
                c.execute(sa.text("INSERT INTO watch_target (watch_id, platform) VALUES (:w, 'outbox')"),
                          {"w": wid})
        engine.dispose()
        proc = daemon(write_config(tmp, url, interval=interval, quickstart=False))
        backends = Backends(url) if engine.dialect.name == "postgresql" else None
        try:
            # Start-up and the first round of polls (every watch takes its baseline on the full path, all
            # due at once): the window measures the steady state after it, not the backlog.
            settled = _first_round(url, watches, deadline=time.time() + 600)
            time.sleep(max(5.0, interval / 6))
            cpu0, _ = proc_stat(proc.pid)
            t0 = time.time()
            if backends is not None:
                backends.sample()
                while time.time() < t0 + window:
                    time.sleep(min(1.0, t0 + window - time.time()))
                    backends.sample()
            else:
                time.sleep(window)
            cpu1, rss = proc_stat(proc.pid)
            elapsed = time.time() - t0
            engine = sa.create_engine(url)
            with engine.connect() as c:
                polled = [v for (v,) in c.execute(sa.text("SELECT last_poll_at FROM watch"))]
            engine.dispose()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)  # a batch of polls in flight finishes first
            except subprocess.TimeoutExpired:
                proc.kill()
        cpu = 100 * (cpu1 - cpu0) / elapsed
        parts = ""
        if backends is not None:
            server = 100 * backends.cpu() / elapsed
            kinds = sorted(set(backends.kinds.values()))
            backends.close()
            parts = (f" = daemon {cpu:.2f}% + PostgreSQL {server:.2f}% ({len(backends.last)} server processes: "
                     f"{', '.join(kinds)})")
            cpu += server
        print(f"  {label:<34} {watches} watches @ {interval}s: CPU {cpu:5.2f}% of one core over {elapsed:.0f} s "
              f"(goal < 5%: {cpu / 5:.2f}x of it){parts}, RSS {rss / 1024:.0f} MiB (goal < 200: "
              f"{rss / 1024 / 200:.2f}x)")
        print(f"  {'':<34} {spread(polled, interval)}; load average {os.getloadavg()[0]:.1f}")
        print(f"  {'':<34} (window after the first round of baselines, which took {settled:.0f} s)")
        warnings = (tmp / "daemon.log").read_text().count("WARNING")
        print(f"  {'':<34} {warnings} warnings in the daemon's log")


def spread(polled: list, interval: int) -> str:
    """How the last polls fall over the interval: the busiest second against an even spread."""
    from collections import Counter
    from datetime import datetime

    secs = Counter()
    for v in polled:
        if v is None:
            continue
        if isinstance(v, str):
            v = datetime.fromisoformat(v)
        secs[int(v.timestamp()) % interval] += 1
    n = sum(secs.values())
    even = n / interval
    busiest = max(secs.values(), default=0)
    return (f"poll spread: {n} polled, {len(secs)} of {interval} seconds used, busiest second {busiest} "
            f"polls vs {even:.0f} if even ({busiest / even if even else 0:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--large-files", type=int, default=40)
    ap.add_argument("--watches", type=int, default=10_000)
    ap.add_argument("--interval", type=int, default=60)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--idle-only", action="store_true", help="skip the throughput runs")
    ap.add_argument("--pg-only", action="store_true", help="with --pg: skip SQLite")
    ap.add_argument("--pg", default="", help="also run on this PostgreSQL admin URL (a database is created)")
    args = ap.parse_args()

    backends = [("sqlite", lambda tmp: f"sqlite:///{tmp}/aiposter.db")]
    created: list[str] = []
    if args.pg:
        def pg(tmp: Path, admin=args.pg) -> str:
            name = f"aiposter_bench_{os.getpid()}_{len(created)}"
            with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            created.append(name)
            return sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
        backends.append(("postgresql", pg))
    if args.pg_only and args.pg:
        backends = backends[1:]
    try:
        run(args, backends)
    finally:
        if created:
            with sa.create_engine(args.pg, isolation_level="AUTOCOMMIT").connect() as c:
                for name in created:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(args, backends) -> None:
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print("throughput (local -> template -> outbox, 4 workers, includes decode + re-encode):")
    for name, url_for in backends if not args.idle_only else []:
        throughput(url_for, args.files, (640, 480), f"{name}, 640x480 photos")
        throughput(url_for, args.large_files, (4000, 3000), f"{name}, 12 MP photos")
    print("transactions per photo (the steps in this process, no scheduler):")
    for name, url_for in backends if not args.idle_only else []:
        transactions(url_for, 40, name)
    print("idle:")
    for name, url_for in backends:
        idle(url_for, args.watches, args.idle_seconds, args.interval, name)


if __name__ == "__main__":
    main()
