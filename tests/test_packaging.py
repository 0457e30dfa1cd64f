"""What the Dockerfile relies on: a plain (non-editable) install ships the migrations and the CLI works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_install_carries_migrations_and_runs(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(ROOT)], check=True, timeout=300, cwd=tmp_path)
    installed = target / "aiposter" / "migrations"
    assert (installed / "env.py").is_file()
    assert sorted(p.name for p in (installed / "versions").glob("0*.py"))[0].startswith("0001")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIPOSTER_")},
           "PYTHONPATH": str(target), "AIPOSTER_DB_URL": f"sqlite:///{tmp_path}/d.db",
           "AIPOSTER_DAEMON_DATA_DIR": str(tmp_path / "data")}
    res = subprocess.run([sys.executable, "-m", "aiposter", "migrate"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "database is up to date" in res.stdout
    code = "import aiposter, sys; print(aiposter.__file__)"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(target))  # the installed copy, not the source tree


def test_dockerfile_steps_match_the_project():
    text = (ROOT / "Dockerfile").read_text()
    copied = " ".join(line for line in text.splitlines() if line.startswith("COPY "))
    for path in ("pyproject.toml", "README.md", "aiposter", "migrations", "config.example.toml"):
        assert path in copied and (ROOT / path).exists()
    assert "USER aiposter" in text and 'VOLUME ["/data"]' in text and "HEALTHCHECK" in text
    assert "/healthz" in text


def test_systemd_unit_is_hardened():
    unit = (ROOT / "systemd" / "aiposter.service").read_text()
    for line in ("User=aiposter", "StateDirectory=aiposter", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "Restart=on-failure"):
        assert line in unit.splitlines()
