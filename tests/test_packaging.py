"""What the Dockerfile relies on: a plain (non-editable) install ships the migrations and the CLI works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy.engine import make_url

from aiposter import config

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


# ---------------------------------------------------------------- deployment files (no Docker engine here)


def _image_config_text() -> str:
    """/etc/aiposter/config.toml as the Dockerfile makes it: config.example.toml through its sed lines."""
    text = (ROOT / "config.example.toml").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    edits = re.findall(r"-e 's\|(.+?)\|(.*?)\|'", dockerfile)
    assert len(edits) >= 6
    for pattern, replacement in edits:
        text, n = re.subn(pattern, replacement.replace("\\", "\\\\"), text, flags=re.M)
        assert n == 1, f"the Dockerfile's sed {pattern!r} matches {n} lines of config.example.toml"
    return text


def test_image_settings_are_in_its_config_file_not_in_the_environment(tmp_path):
    dockerfile = (ROOT / "Dockerfile").read_text()
    env_vars = set(re.findall(r"\b(AIPOSTER_\w+)=", dockerfile))
    assert env_vars == {"AIPOSTER_CONFIG"}  # settings in ENV would silently win over the mounted file
    path = tmp_path / "config.toml"
    path.write_text(_image_config_text())
    cfg = config.load(path, environ={})
    assert (cfg.daemon.data_dir, cfg.db_url) == ("/data", "sqlite:////data/aiposter.db")
    assert (cfg.publishers.outbox.directory, cfg.quickstart.inbox) == ("/data/outbox", "/data/inbox")
    assert (cfg.api.host, cfg.api.port, cfg.log.format) == ("0.0.0.0", 8080, "json")
    assert 'VOLUME ["/data"]' in dockerfile and "EXPOSE 8080" in dockerfile
    assert "COPY config.example.toml /etc/aiposter/config.toml" in dockerfile


def test_every_role_has_a_healthcheck_and_the_image_installs_the_pins():
    dockerfile = (ROOT / "Dockerfile").read_text()
    [healthcheck] = [line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK")]
    assert healthcheck.endswith('CMD ["aiposter", "health"]')  # not an HTTP probe: a worker has no API
    [install] = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    assert "-c requirements.lock" in install
    assert "requirements.lock" in " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY "))


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.split(";")[0].strip().partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_dependency_within_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _lock()
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is not {req.specifier}"
        for extra in req.extras:  # psycopg[binary] brings psycopg-binary
            assert canonicalize_name(f"{req.name}-{extra}") in pins


def test_readme_and_ci_install_the_same_pins():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert "pip install -q -c requirements.lock -e '.[test]'" in ci
    assert f"```sh\n{ci}\n```" in readme  # the README's test command is exactly what CI runs


def _compose_env(value: str) -> str:
    """Compose's ${VAR:-default} interpolation, with nothing set in the shell."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_file_starts_postgres_an_api_and_a_worker_consistently(tmp_path):
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "api", "worker"}
    pg = services["postgres"]
    pg_env = {k: _compose_env(v) for k, v in pg["environment"].items()}
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    image_config = tmp_path / "config.toml"
    image_config.write_text(_image_config_text())
    for role in ("api", "worker"):
        svc = services[role]
        assert svc["build"] == "." and svc["command"] == ["aiposter", role]
        assert svc["healthcheck"]["test"] == ["CMD", "aiposter", "health"]
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "aiposter-data:/data" in svc["volumes"]  # one key file and outbox for both
        env = {k: _compose_env(v) for k, v in svc["environment"].items()}
        cfg = config.load(image_config, environ=env)  # only variables the config knows, with valid values
        url = make_url(cfg.db_url)
        assert (url.host, url.port, url.database) == ("postgres", 5432, pg_env["POSTGRES_DB"])
        assert (url.username, url.password) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"  # migrations, key first
    assert services["api"]["ports"] == [f"127.0.0.1:{config.Config().api.port}:8080"]
    named = {v.split(":")[0] for svc in services.values() for v in svc.get("volumes", [])}
    assert named == set(compose["volumes"])


def test_systemd_does_not_retry_a_config_error_nor_override_the_file():
    unit = (ROOT / "systemd" / "aiposter.service").read_text().splitlines()
    assert "RestartPreventExitStatus=2" in unit  # exit 2: bad config, a restart cannot fix it
    assert [line for line in unit if line.startswith("Environment=")] == \
        ["Environment=AIPOSTER_CONFIG=/etc/aiposter/config.toml"]
