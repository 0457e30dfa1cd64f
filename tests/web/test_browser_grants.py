"""Choosing which Facebook Pages to use, in Chromium: the consent returns to 'Choose which Pages to use',
which passes an axe scan (light and dark) and the keyboard check; the ticked Page alone is connected.

Reuses the live server, browser and helpers of test_browser.py (a live server of this module's own)."""

from __future__ import annotations

import pytest

pw = pytest.importorskip("playwright.sync_api")

from web.test_browser import (  # noqa: E402, F401 - fixtures and helpers shared with the main browser tests
    DESKTOP,
    PHONE,
    _keyboard_reaches_everything,
    browser,
    live,
    monkeypatch_module,
    page,
    shots,
    sign_in,
)


def serious(results) -> list[str]:
    return [f"{v['id']}: {v['help']} ({v['nodes'][0]['target']})" for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")]


def test_a_user_picks_one_of_the_pages_facebook_granted(page, live, shots):  # noqa: F811 - the imported fixtures
    from axe_playwright_python.sync_playwright import Axe

    live.user("cara@example.com")
    sign_in(page, live, "cara@example.com")
    page.get_by_role("link", name="Social accounts").click()
    page.get_by_role("button", name="Connect Facebook Page", exact=True).click()  # the fake grants 2 Pages
    pw.expect(page.get_by_role("heading", name="Choose which Pages to use")).to_be_visible()
    pw.expect(page.get_by_role("group", name="Pages you gave access to")).to_be_visible()

    axe = Axe()
    page.screenshot(path=str(shots / "grant-desktop.png"), full_page=True)
    problems = serious(axe.run(page))
    _keyboard_reaches_everything(page)
    page.emulate_media(color_scheme="dark")
    problems += [f"(dark) {p}" for p in serious(axe.run(page, options={"runOnly": ["color-contrast"]}))]
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(shots / "grant-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    assert not problems, "\n".join(problems)

    page.get_by_role("button", name="Use the selected Pages").click()  # nothing ticked: the field's error
    pw.expect(page.get_by_role("alert")).to_contain_text("choose at least one")
    page.get_by_label("Bakery").check()
    page.get_by_role("button", name="Use the selected Pages").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Connected: Bakery.")
    pw.expect(page.locator("table")).to_contain_text("Bakery")
    pw.expect(page.locator("table")).not_to_contain_text("Garage")
