"""Admins create, list, disable, enable and delete users."""

from __future__ import annotations

from .conftest import PASSWORD


def test_admin_manages_users(client, admin, ann):
    r = client.post("/api/v1/users", headers=admin.headers,
                    json={"email": "New@Example.com", "password": PASSWORD, "display_name": "Newt"})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["email"] == "new@example.com" and new["role"] == "user" and new["display_name"] == "Newt"
    emails = [u["email"] for u in client.get("/api/v1/users", headers=admin.headers).json()]
    assert emails == ["root@example.com", "ann@example.com", "new@example.com"]
    assert client.get(f"/api/v1/users/{ann.id}", headers=admin.headers).json()["email"] == ann.email
    r = client.post(f"/api/v1/users/{ann.id}/disable", headers=admin.headers)
    assert r.status_code == 200 and r.json()["disabled"] is True
    r = client.delete(f"/api/v1/users/{new['id']}", headers=admin.headers)
    assert r.status_code == 200 and r.json() == {"deleted": True, "posts": 0}
    assert client.get(f"/api/v1/users/{new['id']}", headers=admin.headers).status_code == 404


def test_user_creation_errors_name_the_field(client, admin, ann):
    r = client.post("/api/v1/users", headers=admin.headers, json={"email": ann.email, "password": PASSWORD})
    assert r.status_code == 409 and r.json()["error"] == {
        "code": "conflict", "message": "a user with email ann@example.com already exists", "field": "email"}
    r = client.post("/api/v1/users", headers=admin.headers, json={"email": "not-an-email"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "email"
    r = client.post("/api/v1/users", headers=admin.headers, json={"email": "a@b.c", "role": "root"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "role"
    r = client.post("/api/v1/users", headers=admin.headers, json={"email": "a@b.c", "password": "short"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "password"


def test_admins_cannot_lock_themselves_out(client, admin):
    assert client.post(f"/api/v1/users/{admin.id}/disable", headers=admin.headers).status_code == 409
    assert client.delete(f"/api/v1/users/{admin.id}", headers=admin.headers).status_code == 409
    assert client.get("/api/v1/me", headers=admin.headers).status_code == 200
