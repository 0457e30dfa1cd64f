"""Issue 8, finding 10: weak passwords and malformed emails are refused (zxcvbn, email-validator), in the API
and the CLI alike, with the field named."""

from __future__ import annotations

import pytest

from .conftest import PASSWORD


@pytest.mark.parametrize("password", ["aaaaaaaaaa", "password1234", "qwertyuiop12", "1234567890", "iloveyou123"])
def test_common_and_trivial_passwords_are_refused(client, admin, ann, password):
    r = client.post("/api/v1/users", headers=admin.headers, json={"email": "new@example.com", "password": password})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "password" and "guess" in r.json()["error"]["message"]
    r = client.post("/api/v1/me/password", headers=ann.headers,
                    json={"current_password": PASSWORD, "new_password": password})
    assert r.status_code == 422 and r.json()["error"]["field"] == "new_password"


def test_a_password_made_of_the_email_is_refused(client, admin, ann):
    r = client.post("/api/v1/users", headers=admin.headers,
                    json={"email": "zoe@example.com", "password": "zoe@example.com1"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "password"
    r = client.post("/api/v1/me/password", headers=ann.headers,
                    json={"current_password": PASSWORD, "new_password": "ann@example.com1"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "new_password"


@pytest.mark.parametrize("email", ["a@b", "a@b.", "@example.com", "a b@example.com", "a@@example.com",
                                   "a@-example.com", "a@[127.0.0.1]", "a@localhost.", "x@test"])
def test_malformed_emails_are_refused(client, admin, email):
    r = client.post("/api/v1/users", headers=admin.headers, json={"email": email, "password": PASSWORD})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "email"


def test_good_ones_still_work_and_the_domain_is_normalized(client, admin):
    r = client.post("/api/v1/users", headers=admin.headers,
                    json={"email": "Zoe.Smith+shop@Example.COM", "password": "a much longer secret"})
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "zoe.smith+shop@example.com"
    r = client.post("/api/v1/auth/login", json={"email": "zoe.smith+shop@example.com",
                                                "password": "a much longer secret"})
    assert r.status_code == 200


def test_the_cli_applies_the_same_rules(tmp_path, db_url):
    from typer.testing import CliRunner

    from aiposter.cli import app

    config = tmp_path / "c.toml"
    config.write_text(f'[db]\nurl = "{db_url}"\n[daemon]\ndata_dir = "{tmp_path / "data"}"\n'
                      "[quickstart]\nenabled = false\n")
    runner = CliRunner()
    r = runner.invoke(app, ["--config", str(config), "user", "create", "a@b", "--no-password"])
    assert r.exit_code == 2 and "email" in r.output
    r = runner.invoke(app, ["--config", str(config), "user", "create", "c@example.com", "--password-stdin"],
                      input="aaaaaaaaaa\n")
    assert r.exit_code == 2 and "guess" in r.output
    r = runner.invoke(app, ["--config", str(config), "user", "create", "owner@localhost", "--no-password"])
    assert r.exit_code == 0, r.output
