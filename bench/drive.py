"""Drive adapter figures against the loopback fake (tests/fakes/drive.py), through the real client libraries.

    .venv/bin/python bench/drive.py [--folders 100] [--files 10000] [--interval 2.0] [--rounds 5]

1. Requests per idle poll for 1 connection x N watched folders (goal: 1), side by side with the
   per-folder model (one files.list per folder per poll, as n8n's Drive trigger does).
2. Baseline of a folder of 10,000 files: requests and seconds, side by side with the same listing at
   Drive's default page size (100) as the ceiling.
3. Detection latency, polling (at --interval) vs push (a notification triggers an immediate poll).
4. RSS of the process after all of the above.

The adapter figures above come first; ``--daemon`` (phase 2) then measures the same through the daemon
itself, on a SQLite database in a temporary directory: watches created through the service (folder check
and baseline at creation), the per-connection feed claimed and polled by ``poll_feed``, and detection
latency with the real Daemon (polling at ``--daemon-interval``) and with push (the API served by uvicorn
receiving the fake's notifications), from the change to the post row. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakes.drive import FakeDrive  # noqa: E402

from aiposter.sources.google_drive import (  # noqa: E402
    AncestryCache,
    DriveClient,
    DriveSettings,
    WatchSpec,
    list_watch,
    poll_changes,
    subscribe,
    verify_notification,
)


def client_for(fake: FakeDrive, **kw) -> DriveClient:
    return DriveClient(fake.issue_tokens(), DriveSettings(api_url=fake.api_url, token_uri=fake.token_uri,
                                                          revoke_uri=fake.revoke_uri, **kw))


def idle_poll(n_folders: int) -> None:
    fake = FakeDrive()
    try:
        client = client_for(fake)
        folders = [fake.add_folder(f"F{i}") for i in range(n_folders)]
        watches = [WatchSpec(i, f, include_subfolders=i % 2 == 0) for i, f in enumerate(folders)]
        token = client.start_page_token()
        cache = AncestryCache()
        fake.reset_counts()
        rounds = 10
        for _ in range(rounds):
            token = poll_changes(client, token, watches, cache=cache).new_token
        ours = sum(fake.counts.values()) / rounds
        fake.reset_counts()
        for f in folders:  # the per-folder model: one listing per watched folder per poll
            client.list_page(f"'{f}' in parents and trashed = false", page_size=100)
        per_folder = sum(fake.counts.values())
        print(f"idle poll, 1 connection x {n_folders} folders: {ours:.0f} request(s) per poll "
              f"(per-folder listing: {per_folder}; ratio {ours / per_folder:.3f})")
    finally:
        fake.close()


def baseline(n_files: int) -> None:
    fake = FakeDrive()
    try:
        photos = fake.add_folder("Photos")
        fake.add_files(photos, n_files)
        figures = {}
        for label, page_size in (("ours (pageSize 1000)", 1000), ("ceiling (pageSize 100)", 100)):
            client = client_for(fake, page_size=page_size)
            fake.reset_counts()
            t0 = time.perf_counter()
            listing = list_watch(client, WatchSpec("w", photos))
            dt = time.perf_counter() - t0
            assert len(listing.files) == n_files
            figures[label] = (sum(fake.counts.values()), dt)
        (r1, t1), (r2, t2) = figures.values()
        print(f"baseline of {n_files} files: {r1} requests, {t1:.2f} s; ceiling {r2} requests, {t2:.2f} s "
              f"(time ratio {t1 / t2:.2f})")
    finally:
        fake.close()


class _Push:
    def __init__(self, on_note):
        outer = self
        self.on_note = on_note

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                outer.on_note({k: v for k, v in self.headers.items()})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def latency(interval: float, rounds: int) -> None:
    fake = FakeDrive()
    try:
        client = client_for(fake)
        photos = fake.add_folder("Photos")
        watches = [WatchSpec("w", photos)]
        state = {"token": client.start_page_token(), "seen": {}}
        lock = threading.Lock()
        wake = threading.Event()
        stop = threading.Event()

        def poll_once():
            with lock:
                result = poll_changes(client, state["token"], watches)
                state["token"] = result.new_token
                now = time.perf_counter()
                for ev in result.events:
                    state["seen"].setdefault(ev.file.name, now)

        def poller():  # the safety-net loop; a push sets `wake` for an immediate poll
            while not stop.is_set():
                wake.wait(interval)
                wake.clear()
                poll_once()

        def measure(label: str) -> float:
            waits = []
            for k in range(rounds):
                name = f"{label}-{k}.jpg"
                t0 = time.perf_counter()
                fake.add_file(name, photos, content=name.encode())
                while name not in state["seen"]:
                    time.sleep(0.002)
                waits.append(state["seen"][name] - t0)
            return statistics.median(waits)

        t = threading.Thread(target=poller, daemon=True)
        t.start()
        polling = measure("poll")
        holder = {}

        def on_note(headers):
            try:
                if verify_notification(headers, holder["ch"]).should_poll:
                    wake.set()
            except Exception:  # noqa: BLE001 - a rejected notification is ignored
                pass

        push = _Push(on_note)
        holder["ch"] = subscribe(client, state["token"], push.url)
        pushed = measure("push")
        stop.set()
        wake.set()
        print(f"detection latency (median of {rounds}): polling every {interval:.1f} s {polling * 1000:.0f} ms, "
              f"push {pushed * 1000:.0f} ms (ratio {pushed / polling:.3f})")
        push.server.shutdown()
    finally:
        fake.close()


# =========================================================================== through the daemon (phase 2)


class _Install:
    """A throwaway install: SQLite, one user, one Drive connection on the fake, the pipeline context."""

    def __init__(self, fake: FakeDrive, tmp: Path, **sections):
        import os

        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        from conftest import make_config
        from fakes.drive import CLIENT_ID, CLIENT_SECRET

        from aiposter.app import open_app
        from aiposter.core.pipeline import Context
        from aiposter.db import session_scope
        from aiposter.services import connections, oauth, users

        oauth_cfg = {"google": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "auth_uri": fake.auth_uri,
                                "token_uri": fake.token_uri, "drive_api_url": fake.api_url.rstrip("/"),
                                "revoke_uri": fake.revoke_uri}}
        sections.setdefault("oauth", {}).setdefault("google", {}).update(oauth_cfg["google"])
        self.app = open_app(make_config(tmp, f"sqlite:///{tmp}/bench.db", **sections))
        self.ctx = Context(self.app.cfg, self.app.engine, owner="bench", keyring=self.app.keyring)
        with session_scope(self.app.engine) as s:
            self.user = users.create_user(s, "bench@example.com")
            secrets = fake.issue_tokens()
            secrets.pop("client_secret")
            [c] = connections.store(s, self.app.keyring, self.user.id, "google_drive", [oauth.Account(
                account_id="bench", account_name="bench", credentials=secrets, scopes=["drive.readonly"])])
            self.cid = c.id
            self.user_id = self.user.id

    def add_watch(self, folder: str, **kw) -> int:
        from aiposter.core.models import User
        from aiposter.db import session_scope
        from aiposter.services import watches

        with session_scope(self.app.engine) as s:
            spec = watches.WatchSpec(folder=folder, source="google_drive", source_connection_id=self.cid,
                                     interval_seconds=kw.pop("interval", 30), targets=["outbox"], **kw)
            return watches.create_watch(s, self.app.cfg, s.get(User, self.user_id), spec,
                                        keyring=self.app.keyring).id

    def poll(self):
        import sqlalchemy as sa

        from aiposter.core.drive_feeds import claim_feeds
        from aiposter.core.models import DriveFeed
        from aiposter.db import session_scope
        from aiposter.sources.google_drive.poller import poll_feed

        with session_scope(self.app.engine) as s:
            s.execute(sa.update(DriveFeed).values(next_poll_at=sa.func.now()))
            ids = claim_feeds(s, "bench", 30, 10)
        return [poll_feed(self.ctx, i) for i in ids]

    def close(self):
        self.app.close()


def daemon_idle_and_baseline(n_folders: int, n_files: int) -> None:
    import tempfile

    fake = FakeDrive()
    with tempfile.TemporaryDirectory() as tmp:
        inst = _Install(fake, Path(tmp))
        try:
            folders = [fake.add_folder(f"F{i}") for i in range(n_folders)]
            for i, f in enumerate(folders):
                inst.add_watch(f, include_subfolders=i % 2 == 0)
            inst.poll()  # catch up with the folders made after the feed's token
            fake.reset_counts()
            rounds = 10
            for _ in range(rounds):
                inst.poll()
            per_poll = sum(fake.counts.values()) / rounds
            print(f"[daemon] idle poll, 1 connection x {n_folders} watched folders: {per_poll:.0f} request(s) "
                  f"per poll (per-folder model: {n_folders}; ratio {per_poll / n_folders:.3f})")

            big = fake.add_folder("Big")
            fake.add_files(big, n_files)
            fake.reset_counts()
            t0 = time.perf_counter()
            inst.add_watch(big)
            dt = time.perf_counter() - t0
            reqs = sum(fake.counts.values())
            t1 = time.perf_counter()
            list_watch(client_for(fake), WatchSpec("w", big))  # the listing alone: the ceiling
            ceiling = time.perf_counter() - t1
            print(f"[daemon] watch creation with a baseline of {n_files} files (check + token + listing + "
                  f"{n_files} rows): {reqs} requests, {dt:.2f} s; listing alone {ceiling:.2f} s "
                  f"(ratio {dt / ceiling:.2f})")
        finally:
            inst.close()
            fake.close()


def daemon_latency(interval: int, rounds: int) -> None:
    """From a change in Drive to the post row, through the running Daemon: polling at ``interval``, then
    with push (the API served by uvicorn, the fake delivering to it)."""
    import socket
    import tempfile

    import uvicorn
    from sqlmodel import select

    from aiposter.api.app import create_app
    from aiposter.core.daemon import Daemon
    from aiposter.core.models import DrivePushChannel, Post
    from aiposter.db import session_scope

    def measure(inst, folder, label) -> float:
        waits = []
        for k in range(rounds):
            name = f"{label}-{k}.jpg"
            t0 = time.perf_counter()
            fake.add_file(name, folder, content=name.encode())
            while True:
                with session_scope(inst.app.engine) as s:
                    if s.exec(select(Post.id).where(Post.file_name == name)).first() is not None:
                        break
                time.sleep(0.01)
            waits.append(time.perf_counter() - t0)
        return statistics.median(waits)

    results = {}
    for mode in ("polling", "push"):
        fake = FakeDrive()
        with tempfile.TemporaryDirectory() as tmp:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            push = mode == "push"
            inst = _Install(fake, Path(tmp), daemon={"tick_seconds": 0.2, "housekeeping_seconds": 3600},
                            api={"public_url": "https://poster.test" if push else ""},
                            oauth={"google": {"min_interval_seconds": interval, "push_min_interval_seconds": 10,
                                              "push_address": f"http://127.0.0.1:{port}/api/v1/drive/push"}})
            server = uvicorn.Server(uvicorn.Config(create_app(inst.app), host="127.0.0.1", port=port,
                                                   log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            daemon = None
            try:
                folder = fake.add_folder("Photos")
                inst.add_watch(folder, interval=interval if not push else 30)
                while not server.started:
                    time.sleep(0.01)
                daemon = Daemon(inst.ctx)
                daemon.start()
                if push:
                    while True:
                        with session_scope(inst.app.engine) as s:
                            if s.exec(select(DrivePushChannel)).first() is not None:
                                break
                        time.sleep(0.01)
                time.sleep(0.5)  # the first poll of the new feed
                results[mode] = measure(inst, folder, mode)
            finally:
                if daemon is not None:
                    daemon.stop(5)
                server.should_exit = True
                thread.join(5)
                inst.close()
                fake.close()
    print(f"[daemon] detection latency, change -> post row (median of {rounds}): polling every {interval} s "
          f"{results['polling'] * 1000:.0f} ms; push (poll interval 30 s) {results['push'] * 1000:.0f} ms "
          f"(ratio {results['push'] / results['polling']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folders", type=int, default=100)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--daemon", action="store_true", help="also measure through the daemon (phase 2)")
    ap.add_argument("--daemon-only", action="store_true")
    ap.add_argument("--daemon-interval", type=int, default=2, help="polling interval for the latency figure")
    args = ap.parse_args()
    if not args.daemon_only:
        idle_poll(args.folders)
        baseline(args.files)
        latency(args.interval, args.rounds)
    if args.daemon or args.daemon_only:
        daemon_idle_and_baseline(args.folders, args.files)
        daemon_latency(args.daemon_interval, args.rounds)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of this process (fake Drive included): {rss:.0f} MB")


if __name__ == "__main__":
    main()
