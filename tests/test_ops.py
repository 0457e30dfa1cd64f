"""What an operator relies on outside the code paths: file modes of what the daemon writes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
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
