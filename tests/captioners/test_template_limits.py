"""Caption and prompt templates are users' code: they cannot take the host's memory or a worker's time.

Every limit is checked before the operation that would go over it, so these tests never allocate more
than a few hundred kilobytes (the bombs below would take gigabytes, or forever, without the limits).
"""

from __future__ import annotations

import pytest
from helpers import drain, write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due

from aiposter.captioners.llm import build_prompt
from aiposter.captioners.template import TemplateCaptioner, check_template, render
from aiposter.config import Config
from aiposter.core import states
from aiposter.core.errors import CaptionError
from aiposter.core.models import Post
from aiposter.core.ports import CaptionRequest
from aiposter.db import session_scope
from aiposter.services import Invalid, users, watches

VARS = {"file_stem": "a_b", "folder": "F", "platforms": ["facebook", "threads"], "hashtags": "#x"}

BOMBS = {
    "repeat": "{{ 'x' * 3000000000 }}",
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "method width": "{{ 'x'.ljust(3000000000) }}",
    "filter width": "{{ 'x' | center(3000000000) }}",
    "percent width": "{{ '%3000000000d' % 1 }}",
    "format width": "{{ '{:>3000000000}'.format(1) }}",
    "nested format width": "{{ '{:>{}}'.format(1, 3000000000) }}",
    "doubling ~": "{% set ns = namespace(x='xx') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
                  "{% endfor %}{{ ns.x | length }}",
    "doubling join": "{% set ns = namespace(x='xx') %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] | join %}"
                     "{% endfor %}",
    "squaring": "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "power": "{{ 10 ** 100000000 }}",
    "nested literals": "{% set a = 'x' * 90000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}{{ b }}",
    "buffered output": "{% macro f() %}{% for i in range(90000) %}xxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}"
                       "{% endmacro %}{{ f() | length }}",
    "int to bytes": "{{ (1).to_bytes(3000000000, 'big') }}",
    "replace growth": "{{ ('x' * 99999).replace('x', 'yyyyy') }}",
    "batch fill": "{{ [1] | batch(3000000000, 'x') | list }}",
    "indent": "{{ 'a\nb' | indent(3000000000) }}",
    "huge output": "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}",
}


@pytest.mark.parametrize("template", list(BOMBS.values()), ids=list(BOMBS))
def test_bombs_are_refused_with_a_clear_permanent_error(template):
    with pytest.raises(CaptionError) as info:
        render(template, VARS)
    assert info.value.permanent and info.value.code == "template"
    assert str(info.value).startswith("the caption template failed: ")
    assert any(word in str(info.value) for word in ("more than", "longer than", "limited to", "write the width"))


def test_a_slow_loop_stops_at_the_time_budget():
    # Few steps, each slow: the step limit is not reached, the time budget is (checked during the loop,
    # which prints nothing, so the output cannot be what stops it).
    from aiposter.captioners import sandbox

    slow = "{% for i in range(20000) %}{% set y = ('x' * 99999).replace('x', 'y') %}{% endfor %}"
    with pytest.raises(sandbox.TemplateLimitError, match=r"took longer than 0\.02 s"):
        sandbox.render(slow, VARS, time_budget=0.02)


def test_ordinary_templates_still_render():
    text = ("{{ file_stem | replace('_', ' ') | title }}{% if folder %} — {{ folder }}{% endif %} {{ 'a' ~ 'b' }} "
            "{{ platforms | join(',') }} {% for p in platforms %}{{ loop.index }}{{ p[:1] }}{% endfor %} "
            "{{ '%03d' % 7 }} {{ '{:>3}|'.format('z') }} {{ range(3) | list | length }} {{ 2 ** 10 }}")
    assert render(text, VARS) == "A B — F ab facebook,threads 1f2t 007   z| 3 1024"


def test_template_captioner_refuses_at_render_time(tmp_path):
    cfg = Config.model_validate({"captioner": {"template": {"template": "fine"}}})
    request = CaptionRequest(tmp_path / "x.jpg", "a.jpg", "f", ["threads"], prompt_template=BOMBS["repeat"])
    with pytest.raises(CaptionError, match="100,000 characters"):
        TemplateCaptioner(cfg).caption(request)


def test_llm_prompt_template_is_bounded_too(tmp_path):
    request = CaptionRequest(tmp_path / "x.jpg", "a.jpg", "f", ["threads"])
    with pytest.raises(CaptionError) as info:
        build_prompt(request, BOMBS["nested loops"], [])
    assert info.value.permanent and "100,000 steps" in str(info.value)


def test_save_time_check_names_the_limit():
    assert check_template("{{ file_stem }} {{ hashtags }}") is None
    assert "syntax error" in check_template("{% if %}")
    assert check_template(BOMBS["repeat"]).startswith("goes over a limit: the template builds a value")
    assert check_template(BOMBS["nested loops"]).startswith("goes over a limit: the template takes more than")
    # Errors that depend on the photo are left to render time.
    assert check_template("{{ undefined_name }}") is None


def test_watch_create_and_edit_refuse_a_bomb(ctx, tmp_path):
    wid = add_watch(ctx, tmp_path / "in")
    with session_scope(ctx.engine) as s:
        owner = users.get_user_by_email(s, "ann@example.com")
        with pytest.raises(Invalid) as info:
            watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(
                folder=str(tmp_path / "in"), prompt_template=BOMBS["repeat"]), allow_any_folder=True)
        assert info.value.field == "prompt_template" and "goes over a limit" in info.value.message
        w = watches.get_watch(s, wid)
        with pytest.raises(Invalid, match="prompt_template goes over a limit"):
            watches.update_watch(s, ctx.cfg, owner, w, watches.WatchSpec(prompt_template=BOMBS["nested loops"]),
                                 allow_any_folder=True)


def test_a_bomb_the_save_check_cannot_see_fails_its_post_with_a_reason(ctx, tmp_path):
    """A template that only explodes for some photos passes the save check; that photo's post fails with a
    readable reason, and the others are posted."""
    template = "{% if file_stem == 'bomb' %}{{ 'x' * 3000000000 }}{% else %}{{ file_stem }}{% endif %}"
    wid = add_watch(ctx, tmp_path / "in", prompt_template=template)
    drain(ctx)
    write_image(tmp_path / "in", "bomb.jpg")
    write_image(tmp_path / "in", "fine.jpg")
    make_due(ctx, wid)
    drain(ctx)
    with session_scope(ctx.engine) as s:
        found = {p.file_name: p for p in s.exec(select(Post))}
    assert found["fine.jpg"].status == states.PUBLISHED
    assert found["bomb.jpg"].status == states.FAILED
    assert "the caption template failed: the template builds a value of more than 100,000" in \
        found["bomb.jpg"].last_error


def test_the_configured_template_is_checked_before_start():
    from aiposter import captioners

    cfg = Config.model_validate({"captioner": {"template": {"template": BOMBS["repeat"]}}})
    assert captioners.check("template", cfg).startswith("[captioner.template] template goes over a limit")
    cfg = Config.model_validate({"captioner": {"prompt": BOMBS["nested loops"]}})
    assert captioners.check("template", cfg) is None  # the prompt is for LLM captioners only
