"""What an operator relies on outside the code paths: file modes of what the daemon writes, health checks."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_image
from test_daemon import wait_for, write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_files_and_folders_under_the_data_dir_are_private(tmp_path):
    """Started from a shell or Docker (umask 0022), the database, media, outbox and their folders are
    still readable by the daemon's user only."""
    data = tmp_path / "data"
    cfg = write_config(tmp_path, f"sqlite:///{data}/aiposter.db", quickstart="backfill = true")
    write_image(tmp_path / "inbox", "a.jpg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")}
    proc = subprocess.Popen([sys.executable, "-m", "aiposter", "--config", str(cfg), "run", "--no-api"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: os.umask(0o022))
    try:
        outbox = tmp_path / "outbox"
        wait_for(lambda: outbox.is_dir() and any(p.suffix == ".json" for p in outbox.iterdir()), 60,
                 "the photo in the outbox")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    for folder in (data, data / "media", outbox):
        assert mode(folder) == 0o700, folder
    files = [data / "aiposter.db", *outbox.iterdir()]
    assert len(files) >= 3  # the database, the post's JSON and its cleaned JPEG
    for f in files:
        assert mode(f) == 0o600, f


def _aiposter(cfg: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aiposter", "--config", str(cfg), *args], capture_output=True,
                          text=True, env=env, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("role", ["worker", "api"])
def test_health_command_for_every_role(tmp_path, role):
    """The image's HEALTHCHECK runs `aiposter health` whatever the container runs: a worker (no API) is
    healthy while its scheduler ticks, an API while /healthz answers; a stopped process is unhealthy."""
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/data/aiposter.db")
    cfg.write_text(cfg.read_text().replace("[api]\nenabled = false", "[api]\nenabled = true\nport = 0"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")}
    before = _aiposter(cfg, "health", env=env)
    assert before.returncode == 1 and "unhealthy: no heartbeat" in before.stderr
    proc = subprocess.Popen([sys.executable, "-m", "aiposter", "--config", str(cfg), role],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        healthy = wait_for(lambda: (r := _aiposter(cfg, "health", env=env)).returncode == 0 and r, 60,
                           f"{role} to be healthy")
        assert ("scheduler ticked" in healthy.stdout) == (role != "api")
        assert ("/healthz ok" in healthy.stdout) == (role != "worker")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    after = _aiposter(cfg, "health", env=env)
    assert after.returncode == 1 and "unhealthy" in after.stderr


def test_a_scheduler_that_stopped_ticking_is_unhealthy(tmp_path):
    from aiposter import health
    from aiposter.config import Config

    cfg = Config.model_validate({"daemon": {"data_dir": str(tmp_path)}})
    beat = health.Heartbeat(cfg, worker=True, api=None)
    beat.beat(force=True)
    ok, message = health.check(cfg)
    assert ok and "scheduler ticked" in message
    ok, message = health.check(cfg, now=time.time() + health.stale_after(cfg) + 1)
    assert not ok and "last heartbeat was" in message
    # An API that does not answer is unhealthy even if the scheduler ticks.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    health.Heartbeat(cfg, worker=True, api=health.api_url("0.0.0.0", port)).beat(force=True)
    ok, message = health.check(cfg)
    assert not ok and f"http://127.0.0.1:{port}/healthz does not answer" in message
