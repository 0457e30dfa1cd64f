"""Posting schedules: window parsing, DST-correct openings (hypothesis), and the pipeline's schedule gate
with a fake clock: a post outside its window waits and leaves at the opening; daily caps survive a restart."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from helpers import drain, write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from aiposter.core import pipeline, queue, schedule, states
from aiposter.core.models import Post, Watch
from aiposter.db import session_scope
from aiposter.services import review, users, watches
from aiposter.services.audit import OPERATOR

# --------------------------------------------------------------------------- parsing


def test_parse_windows():
    ws = schedule.parse_windows("mon-fri 08:30-12:00, sat 10:00-14:00")
    assert ws == [schedule.Window(frozenset(range(5)), 510, 720), schedule.Window(frozenset({5}), 600, 840)]
    assert schedule.parse_windows("mon,wed 09:00-10:00")[0].days == frozenset({0, 2})
    assert schedule.parse_windows("daily 00:00-24:00")[0] == schedule.Window(frozenset(range(7)), 0, 1440)
    assert schedule.parse_windows("sun-mon 22:00-02:00") == [
        schedule.Window(frozenset({6, 0}), 1320, 1440), schedule.Window(frozenset({0, 1}), 0, 120)]


@pytest.mark.parametrize("bad", ["", "mon", "funday 08:00-09:00", "mon 25:00-26:00", "mon 08:61-09:00",
                                 "mon 8-9", "mon 24:00-01:00"])
def test_bad_windows_are_refused_with_a_reason(bad):
    with pytest.raises(schedule.ScheduleError):
        schedule.parse_windows(bad)


def test_unknown_zone_is_refused():
    with pytest.raises(schedule.ScheduleError, match="Mars/Olympus"):
        schedule.zone("Mars/Olympus")


def test_next_open_is_described_in_local_time():
    tz = ZoneInfo("Europe/Berlin")
    ws = schedule.parse_windows("tue 08:30-12:00")
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday 13:00 Berlin
    at = schedule.next_open(ws, tz, now)
    assert at == datetime(2026, 11, 24, 7, 30, tzinfo=UTC)
    assert schedule.describe_open(at, tz) == "next window opens Tue 08:30 Europe/Berlin"


def test_spring_forward_gap_opens_at_the_jump():
    tz = ZoneInfo("Europe/Berlin")  # 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC)
    ws = schedule.parse_windows("sun 02:30-04:00")
    at = schedule.next_open(ws, tz, datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert at == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert at.astimezone(tz).strftime("%H:%M") == "03:00"


def test_summer_and_winter_keep_the_wall_clock_time():
    tz = ZoneInfo("America/New_York")
    ws = schedule.parse_windows("mon-fri 09:00-10:00")
    winter = schedule.next_open(ws, tz, datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
    summer = schedule.next_open(ws, tz, datetime(2026, 7, 6, 0, 0, tzinfo=UTC))
    assert winter.hour == 14 and summer.hour == 13  # 09:00 EST / EDT
    assert winter.astimezone(tz).hour == summer.astimezone(tz).hour == 9


# --------------------------------------------------------------------------- DST properties

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo", "Asia/Kolkata",
         "Pacific/Chatham", "America/St_Johns", "Europe/London", "UTC"]
# Instants around DST changes (and elsewhere): 2020..2030, minute precision.
instants = st.integers(min_value=int(datetime(2020, 1, 1, tzinfo=UTC).timestamp()) // 60,
                       max_value=int(datetime(2030, 12, 31, tzinfo=UTC).timestamp()) // 60).map(
    lambda m: datetime.fromtimestamp(m * 60, UTC))
dst_instants = st.sampled_from([datetime(y, m, d, h, tzinfo=UTC) for y in (2025, 2026)
                                for m, d in ((3, 8), (3, 29), (4, 5), (10, 5), (10, 25), (11, 1), (9, 27))
                                for h in (0, 6, 12, 18, 22)])
hhmm = st.integers(min_value=0, max_value=23 * 60 + 59)


@st.composite
def window_specs(draw):
    items = []
    for _ in range(draw(st.integers(1, 3))):
        days = draw(st.sets(st.integers(0, 6), min_size=1, max_size=7))
        start = draw(hhmm)
        length = draw(st.integers(1, 600))
        end = (start + length) % 1440
        day_txt = ",".join(schedule.DAYS[d] for d in sorted(days))
        items.append(f"{day_txt} {start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}")
    return ", ".join(items)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=window_specs(), tzname=st.sampled_from(ZONES), now=st.one_of(instants, dst_instants))
def test_next_open_is_the_first_instant_inside_a_window(spec, tzname, now):
    tz, ws = ZoneInfo(tzname), schedule.parse_windows(spec)
    at = schedule.next_open(ws, tz, now)
    assert at >= now
    assert schedule.in_window(ws, tz, at)
    if at > now:
        # Nothing earlier is inside: the second before, and a sweep of the gap at 5-minute steps (window
        # boundaries and DST changes are at whole minutes, windows last at least one minute).
        assert not schedule.in_window(ws, tz, at - timedelta(seconds=1))
        t = now
        while t < at:
            assert not schedule.in_window(ws, tz, t), (spec, tzname, now, t, at)
            t += timedelta(minutes=1) if at - now < timedelta(hours=6) else timedelta(minutes=5)


@settings(max_examples=100, deadline=None)
@given(tzname=st.sampled_from(ZONES), now=st.one_of(instants, dst_instants))
def test_local_day_contains_now_and_starts_at_local_midnight(tzname, now):
    tz = ZoneInfo(tzname)
    start, end = schedule.local_day(tz, now)
    assert start <= now < end
    assert timedelta(hours=22) <= end - start <= timedelta(hours=26)
    assert start.astimezone(tz).date() == now.astimezone(tz).date()
    assert end.astimezone(tz).date() == now.astimezone(tz).date() + timedelta(days=1)


# --------------------------------------------------------------------------- in the pipeline


class FakeClock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _monday() -> datetime:
    """05:00 UTC (06:00 in Berlin, winter time) on a Monday in January after the real clock's year: rows
    made with the real clock are never in the fake clock's future."""
    d = datetime(datetime.now(UTC).year + 1, 1, 1, 5, 0, tzinfo=UTC)
    return d + timedelta(days=(7 - d.weekday()) % 7)


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock(_monday())
    for mod in (pipeline, queue, review):
        monkeypatch.setattr(mod, "utcnow", c)
    return c


def _watch(ctx, inbox, **spec) -> int:
    inbox.mkdir(parents=True, exist_ok=True)
    with session_scope(ctx.engine) as s:
        owner = users.create_user(s, f"ann{uuid.uuid4().hex[:4]}@example.com", "correct horse battery")
        w = watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(inbox), backfill=True, **spec),
                                 allow_any_folder=True)
        return w.id


def _posts(ctx):
    with session_scope(ctx.engine) as s:
        return list(s.exec(select(Post).order_by(Post.id)))


def _due(ctx, wid):
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).where(Watch.id == wid).values(next_poll_at=datetime(2000, 1, 1, tzinfo=UTC)))


def test_post_outside_its_window_waits_and_leaves_at_the_opening(ctx, tmp_path, clock):
    inbox = tmp_path / "inbox"
    wid = _watch(ctx, inbox, schedule_tz="Europe/Berlin", schedule_windows="mon-fri 08:30-12:00")
    write_image(inbox, "a.jpg")
    _due(ctx, wid)
    drain(ctx)
    (p,) = _posts(ctx)
    assert p.status == states.CAPTIONED
    assert p.last_error == "next window opens Mon 08:30 Europe/Berlin"
    opening = _monday().replace(hour=7, minute=30)
    assert p.next_attempt_at == opening
    with session_scope(ctx.engine) as s:
        from aiposter.services.posts import waiting_for
        assert waiting_for(s, s.get(Post, p.id), now=clock.now) == "next window opens Mon 08:30 Europe/Berlin"
    clock.now = opening - timedelta(seconds=1)
    drain(ctx)
    assert _posts(ctx)[0].status == states.CAPTIONED
    clock.now = opening
    drain(ctx)
    assert _posts(ctx)[0].status == states.PUBLISHED


def test_publish_now_skips_the_window(ctx, tmp_path, clock):
    inbox = tmp_path / "inbox"
    wid = _watch(ctx, inbox, schedule_tz="Europe/Berlin", schedule_windows="sat 10:00-11:00")
    write_image(inbox, "a.jpg")
    _due(ctx, wid)
    drain(ctx)
    (p,) = _posts(ctx)
    assert p.status == states.CAPTIONED
    with session_scope(ctx.engine) as s:
        review.publish_now(s, s.get(Post, p.id), OPERATOR)
    drain(ctx)
    assert _posts(ctx)[0].status == states.PUBLISHED


def test_daily_cap_holds_across_a_restart_and_frees_the_next_local_day(ctx, tmp_path, clock, make_ctx):
    inbox = tmp_path / "inbox"
    wid = _watch(ctx, inbox, schedule_tz="Europe/Berlin", daily_cap=2)
    for i in range(3):
        write_image(inbox, f"p{i}.jpg", color=(10 * i, 20, 30))
    _due(ctx, wid)
    drain(ctx)
    ps = _posts(ctx)
    assert [p.status for p in ps].count(states.PUBLISHED) == 2
    (waiting,) = [p for p in ps if p.status == states.CAPTIONED]
    assert "daily cap of 2" in waiting.last_error
    midnight = _monday().replace(hour=23)  # 00:00 Tuesday in Berlin
    assert waiting.next_attempt_at == midnight
    # A "restart": a new context (fresh process state) on the same database; still capped today.
    again = pipeline.Context(ctx.cfg, ctx.engine, owner="restarted", keyring=ctx.keyring)
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Post).where(Post.id == waiting.id).values(next_attempt_at=clock.now))
    drain(again)
    assert {p.id: p.status for p in _posts(ctx)}[waiting.id] == states.CAPTIONED
    clock.now = midnight
    drain(again)
    assert {p.id: p.status for p in _posts(ctx)}[waiting.id] == states.PUBLISHED


def test_watch_schedule_fields_are_validated(ctx, tmp_path):
    with pytest.raises(watches.Invalid, match="schedule"):
        _watch(ctx, tmp_path / "in", schedule_windows="someday 08:00-09:00")
    with pytest.raises(watches.Invalid, match="time zone"):
        _watch(ctx, tmp_path / "in", schedule_tz="Nowhere/Land")
    with pytest.raises(watches.Invalid, match="approval"):
        _watch(ctx, tmp_path / "in", approval="maybe")
