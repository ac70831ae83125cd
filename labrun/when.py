"""Times as people type them, for ``labrun reserve --from/--to`` (standard library only: the CLI starts
instantly). Local time unless an offset is given:

    2026-12-04T14:00+01:00, 2026-12-04 14:00   ISO 8601 (no offset: local time)
    fri 14:00, friday 9:30, today 18:00        the next such day (today if the time is still ahead)
    tomorrow 9:00, 14:00                        (a time alone: today)
    now, +30m, +2h, +1d, +90s                   from now
"""

from __future__ import annotations

import datetime as dt
import re

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")
_AHEAD = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HELP = (
    "WHEN: ISO 8601 (2026-12-04T14:00+01:00; without an offset, local time), a day and a time ('fri 14:00': "
    "the next Friday, today if still ahead; 'today 18:00', 'tomorrow 9:00', '14:00'), or from now ('now', "
    "'+30m', '+2h', '+1d')"
)


class BadTime(ValueError):
    pass


def parse(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``text`` as an aware datetime (local time unless it names an offset; ``now``: a test's, with its
    offset); BadTime says what is wrong."""
    now = now or dt.datetime.now().astimezone()
    value = " ".join(text.strip().lower().split())
    if value == "now":
        return now
    ahead = _AHEAD.match(value)
    if ahead:
        return now + dt.timedelta(seconds=float(ahead.group(1)) * _UNIT_S[ahead.group(2)])
    try:
        stamp = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return _day_and_time(value, now, text)
    return stamp if stamp.tzinfo else stamp.astimezone()  # naive: local time


def _day_and_time(value: str, now: dt.datetime, text: str) -> dt.datetime:
    day, _, clock = value.rpartition(" ")
    found = _CLOCK.match(clock)
    if not found or int(found.group(1)) > 23 or int(found.group(2) or 0) > 59:
        raise BadTime(f"{text!r} is not a time: {HELP}")
    # on the wall clock (naive), then placed in time: "fri 14:00" is 14:00 whatever the offset is on Friday
    wall = now.replace(tzinfo=None, hour=int(found.group(1)), minute=int(found.group(2) or 0), second=0)
    wall = wall.replace(microsecond=0)
    if day == "tomorrow":
        wall += dt.timedelta(days=1)
    elif day not in ("", "today"):
        if day not in DAYS and day not in FULL:
            raise BadTime(f"{day!r} in {text!r} is not a day (mon ... sun, today, tomorrow): {HELP}")
        wall += dt.timedelta(days=(DAYS.index(day[:3]) - now.weekday()) % 7)
        if _placed(wall, now) <= now:
            wall += dt.timedelta(days=7)
    return _placed(wall, now)


def _placed(wall: dt.datetime, now: dt.datetime) -> dt.datetime:
    """A wall-clock time in ``now``'s zone: the local zone's rules (its offset on that day) for a local
    ``now``, else ``now``'s fixed offset."""
    local = dt.datetime.now().astimezone().tzinfo
    if now.tzinfo is None or now.utcoffset() == now.astimezone(local).utcoffset():
        return wall.astimezone()
    return wall.replace(tzinfo=now.tzinfo)
