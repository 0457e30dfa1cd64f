"""Drive adapter figures against the loopback fake (tests/fakes/drive.py), through the real client libraries.

    .venv/bin/python bench/drive.py [--folders 100] [--files 10000] [--interval 2.0] [--rounds 5]

1. Requests per idle poll for 1 connection x N watched folders (goal: 1), side by side with the
   per-folder model (one files.list per folder per poll, as n8n's Drive trigger does).
2. Baseline of a folder of 10,000 files: requests and seconds, side by side with the same listing at
   Drive's default page size (100) as the ceiling.
3. Detection latency, polling (at --interval) vs push (a notification triggers an immediate poll).
4. RSS of the process after all of the above.

Phase 1 has no daemon wiring yet: the poller here is the loop phase 2 will run (token per connection,
routing to watches). Prints figures; asserts nothing.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folders", type=int, default=100)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    idle_poll(args.folders)
    baseline(args.files)
    latency(args.interval, args.rounds)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of this process (fake Drive included): {rss:.0f} MB")


if __name__ == "__main__":
    main()
