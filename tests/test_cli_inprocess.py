"""The CLI in process (typer's CliRunner): where the config comes from and which database is opened."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiposter import cli


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: str, env: dict | None = None):
    env = {k: None for k in os.environ if k.startswith("AIPOSTER_")} | (env or {})
    return CliRunner().invoke(cli.app, list(args), env=env, catch_exceptions=False)


def write_config(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "conf" / "aiposter.toml"
    cfg.parent.mkdir()
    cfg.write_text(f"[db]\nurl = {json.dumps(db_url)}\n[daemon]\ndata_dir = {json.dumps(str(tmp_path / 'data'))}\n"
                   "[quickstart]\nenabled = false\n")
    return cfg


def test_config_option_before_or_after_the_command(tmp_path, db_url, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./config.toml here: without the option, built-in defaults apply
    cfg = write_config(tmp_path, db_url)
    for args in (["--config", str(cfg), "user", "create", "ann@example.com", "--no-password"],
                 ["user", "create", "bob@example.com", "--no-password", "--config", str(cfg)],
                 ["user", "create", "cy@example.com", "-c", str(cfg), "--no-password"]):
        res = invoke(*args)
        assert res.exit_code == 0, res.output
    listed = invoke("user", "list", "--json", "--config", str(cfg))
    assert [u["email"] for u in json.loads(listed.stdout)] == ["ann@example.com", "bob@example.com", "cy@example.com"]
    # Given in both places, the later (the command's) wins.
    shown = invoke("--config", str(tmp_path / "missing.toml"), "config", "check", "--config", str(cfg))
    assert shown.exit_code == 0 and f"# config file: {cfg}" in shown.stdout


def test_a_command_in_the_wrong_directory_does_not_create_a_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["user", "list"], ["watch", "list"], ["posts", "list"], ["user", "create", "a@example.com",
                                                                           "--no-password"]):
        res = invoke(*args)
        assert res.exit_code == 2, res.output
        assert f"no database at SQLite {tmp_path}/data/aiposter.db" in res.stderr
        assert "--config" in res.stderr and "aiposter migrate" in res.stderr
    assert list(tmp_path.iterdir()) == []  # not even ./data
    # migrate creates it, and says which one.
    res = invoke("migrate")
    assert res.exit_code == 0 and f"to SQLite {tmp_path}/data/aiposter.db; database is up to date" in res.stdout
    assert invoke("user", "list", "--json").stdout.strip() == "[]"


def test_config_check_names_the_database_and_each_values_origin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path, "sqlite:///./file.db")
    res = invoke("config", "check", "--config", str(cfg), env={"AIPOSTER_DB_URL": "sqlite:///./env.db"})
    assert res.exit_code == 0, res.output
    assert f"# database: SQLite {tmp_path}/env.db" in res.stdout
    assert f'url = "sqlite:///./env.db"  # environment variable AIPOSTER_DB_URL, over the file {cfg}' in res.stdout
    assert "workers = 4  # default" in res.stdout


def test_an_empty_postgresql_database_is_not_made_an_install_by_a_cli_command(tmp_path):
    import sqlalchemy as sa
    from conftest import pg_scratch_database, require_pg

    with pg_scratch_database(f"aiposter_empty_{os.getpid()}") as (url, reason):
        url = require_pg(url, reason)
        cfg = write_config(tmp_path, url)
        res = invoke("user", "create", "ann@example.com", "--no-password", "--config", str(cfg))
        assert res.exit_code == 2 and f"no database at {sa.engine.make_url(url).render_as_string()}" in res.stderr
        engine = sa.create_engine(url)
        assert sa.inspect(engine).get_table_names() == []
        engine.dispose()
        assert invoke("migrate", "--config", str(cfg)).exit_code == 0
        assert invoke("user", "create", "ann@example.com", "--no-password", "--config", str(cfg)).exit_code == 0
