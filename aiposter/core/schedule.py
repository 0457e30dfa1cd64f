"""Posting schedules: weekly windows in the owner's time zone and a daily cap per destination.

A watch may say ``mon-fri 08:30-12:00, sat 10:00-14:00`` in ``Europe/Berlin``: its posts leave only while
the local wall-clock time is inside a window. Windows are wall-clock times, so they follow DST: 08:30
stays 08:30 in summer and in winter. Two DST corner cases, decided the way a person reading a clock
would:

* a window that opens inside the spring-forward gap (02:30 on the night clocks jump 02:00 -> 03:00)
  opens at the jump (03:00 local), the first moment the clock shows a time past its start;
* in the repeated hour of a fall-back night, a wall-clock time inside a window is inside it both times.

:func:`next_open` is exact by construction: membership (:func:`in_window`) only changes at an instant
whose wall time is a window's start (either reading of an ambiguous time) or at a UTC-offset change, so
the earliest such candidate that is inside a window is the opening. The hypothesis tests in
``tests/test_schedule.py`` check that nothing earlier is.

The daily cap counts, per destination (platform and account), the watch's posts released into publishing
during the local day; it is counted from the database, so it holds across restarts and replicas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HORIZON_DAYS = 8  # a weekly schedule with any window opens within a week
_ITEM = re.compile(r"^(?P<days>[a-z*,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


class ScheduleError(ValueError):
    """A schedule that cannot be understood; the message says what is wrong."""


@dataclass(frozen=True)
class Window:
    """On ``days`` (0 = Monday), wall-clock minutes [start, end) of the day; end 1440 is midnight."""

    days: frozenset[int]
    start: int
    end: int

    def contains(self, wall: datetime) -> bool:
        minute = wall.hour * 60 + wall.minute + wall.second / 60 + wall.microsecond / 60e6
        return wall.weekday() in self.days and self.start <= minute < self.end


def _minutes(text: str, item: str, allow_24: bool) -> int:
    h, m = (int(x) for x in text.split(":"))
    if m > 59 or h > 24 or (h == 24 and (m or not allow_24)):
        raise ScheduleError(f"{text!r} is not a time of day (in {item!r})")
    return h * 60 + m


def _days(text: str, item: str) -> set[int]:
    if text in ("*", "daily", "every"):
        return set(range(7))
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ScheduleError(f"unknown day {part!r} in {item!r} (use mon tue wed thu fri sat sun, "
                                "ranges like mon-fri, or daily)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update((a + i) % 7 for i in range(((b - a) % 7) + 1))
    return out


def parse_windows(text: str) -> list[Window]:
    """``"mon-fri 08:30-12:00, sat 10:00-14:00"`` as windows. A window that ends at or before its start
    runs past midnight (``fri 22:00-02:00`` is Friday 22:00 to Saturday 02:00)."""
    windows: list[Window] = []
    for raw in re.split(r"(?<=\d)\s*[,;]\s*", text.strip().lower()):
        item = raw.strip().lower()
        if not item:
            continue
        m = _ITEM.match(item)
        if m is None:
            raise ScheduleError(f"cannot read {raw.strip()!r}: write days and hours like 'mon-fri 08:30-12:00'")
        days = _days(m["days"], item)
        start, end = _minutes(m["start"], item, False), _minutes(m["end"], item, True)
        if end > start:
            windows.append(Window(frozenset(days), start, end))
        else:  # past midnight: the evening part, and the morning part on the following days
            windows.append(Window(frozenset(days), start, 1440))
            if end > 0:
                windows.append(Window(frozenset((d + 1) % 7 for d in days), 0, end))
    if not windows:
        raise ScheduleError("a schedule needs at least one window, like 'mon-fri 08:30-12:00'")
    return windows


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (cached: listing the known zones reads the tz database from disk)."""
    try:
        if name not in available_timezones():
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name like Europe/Berlin)") from None


def in_window(windows: list[Window], tz: ZoneInfo, at: datetime) -> bool:
    wall = at.astimezone(tz)
    return any(w.contains(wall) for w in windows)


def _transitions(tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Instants in [start, end] where the zone's UTC offset changes, to the second."""
    out = []
    step = timedelta(hours=1)
    t = start
    while t < end:
        nxt = min(t + step, end)
        if t.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            lo, hi = t, nxt  # offset(lo) != offset(hi): bisect to the first instant with hi's offset
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == hi.astimezone(tz).utcoffset():
                    hi = mid
                else:
                    lo = mid
            out.append(hi.replace(microsecond=0) if hi.replace(microsecond=0) > lo else hi)
        t = nxt
    return out


def next_open(windows: list[Window], tz: ZoneInfo, now: datetime) -> datetime:
    """The first instant at or after ``now`` (aware) that is inside a window."""
    now = now.astimezone(UTC)
    if in_window(windows, tz, now):
        return now
    today: date = now.astimezone(tz).date()
    candidates: list[datetime] = []
    for offset in range(-1, HORIZON_DAYS + 1):
        day = today + timedelta(days=offset)
        for w in windows:
            if day.weekday() not in w.days or w.start >= 1440:
                continue
            wall = datetime.combine(day, time(w.start // 60, w.start % 60))
            for fold in (0, 1):
                candidates.append(wall.replace(tzinfo=tz, fold=fold).astimezone(UTC))
    candidates += _transitions(tz, now, now + timedelta(days=HORIZON_DAYS + 1))
    inside = sorted(c for c in candidates if c > now and in_window(windows, tz, c))
    if not inside:
        raise ScheduleError("the schedule has no window in the coming week")
    return inside[0]


def describe_open(at: datetime, tz: ZoneInfo) -> str:
    """``next window opens Tue 08:30 Europe/Berlin``."""
    return f"next window opens {at.astimezone(tz):%a %H:%M} {tz.key}"


def local_day(tz: ZoneInfo, at: datetime) -> tuple[datetime, datetime]:
    """The local calendar day containing ``at``, as a UTC interval [start, end) (23 or 25 h on DST days)."""
    d = at.astimezone(tz).date()
    start = datetime.combine(d, time(0), tzinfo=tz)
    end = datetime.combine(d + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass
class Wait:
    until: datetime
    reason: str


def check(windows_text: str | None, tz_name: str | None) -> None:
    """Raise ScheduleError if the watch's schedule fields cannot be used."""
    if windows_text:
        parse_windows(windows_text)
    if tz_name:
        zone(tz_name)


def gate(s, watch, post, now: datetime) -> Wait | None:
    """Whether ``post`` may leave now under its watch's schedule; a :class:`Wait` if not.

    Called in the publishing step's transaction. On PostgreSQL the watch row is locked first, so two
    replicas releasing posts of one watch count its daily cap one after the other (SQLite serialises
    writers anyway)."""
    if not watch.schedule_windows and not watch.daily_cap:
        return None
    tz = zone(watch.schedule_tz or "UTC")
    if watch.schedule_windows:
        windows = parse_windows(watch.schedule_windows)
        opens = next_open(windows, tz, now)
        if opens > now:
            return Wait(opens, describe_open(opens, tz))
    if watch.daily_cap:
        from aiposter.core import states
        from aiposter.core.models import Post, PostTarget, Watch

        s.execute(sa.select(Watch.id).where(Watch.id == watch.id).with_for_update())
        day_start, day_end = local_day(tz, now)
        mine = s.execute(sa.select(PostTarget.platform, PostTarget.connection_id)
                         .where(PostTarget.post_id == post.id)).all()
        for platform, connection_id in mine:
            used = s.execute(
                sa.select(sa.func.count()).select_from(PostTarget).join(Post, Post.id == PostTarget.post_id)
                .where(Post.watch_id == watch.id, Post.id != post.id, Post.released_at >= day_start,
                       Post.released_at < day_end, PostTarget.platform == platform,
                       (PostTarget.connection_id == connection_id) if connection_id is not None
                       else PostTarget.connection_id.is_(None),
                       PostTarget.status.not_in((states.T_FAILED, states.T_SKIPPED)))).scalar_one()
            if used >= watch.daily_cap:
                until = day_end
                if watch.schedule_windows:
                    until = next_open(parse_windows(watch.schedule_windows), tz, day_end)
                return Wait(until, f"daily cap of {watch.daily_cap} reached on {platform} today; "
                                   f"next post {until.astimezone(tz):%a %H:%M} {tz.key}")
    return None
