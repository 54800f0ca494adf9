"""Every time a person reads, in one zone per run, and labelled with it.

Captures store UTC epoch seconds. Text output and the TUI show them in UTC unless ``--tz`` (or
``IPSECSCOPE_TZ``) asks for ``local`` (the machine's zone, so times line up with charon logs,
which are written in local time) or an IANA name (``Europe/Berlin``). Every formatter here says
which zone it used: ``UTC`` or the UTC offset at that moment (``UTC-05:00``; a capture across a DST
change shows both offsets). JSON keeps epoch seconds whatever the zone: machines get one stable
form, the zone is only a matter of display.

The zone is a process-wide display setting: the CLI sets it once from ``--tz`` before it
analyses anything, since finding texts quote times too (``analysis.rules.common.clock``).
"""

from __future__ import annotations

import os

# datetime is imported with the first time formatted or zone parsed, not with this module: the CLI
# imports this module on every command for --tz, and decrypt (or a --json run) formats no time at
# all (~1 ms of start-up, issue 15). typing is not imported for that either (`--version`'s path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime, tzinfo
    from types import ModuleType

ENV = "IPSECSCOPE_TZ"
DEFAULT = "UTC"
HELP = ("zone for the times in text output and the TUI: UTC (default), local (this machine's zone, as "
        "charon logs use) or an IANA name such as Europe/Berlin; every time is labelled with its zone or "
        f"UTC offset. JSON always has UTC epoch seconds. Default from ${ENV}")

_UTC_NAMES = ("UTC", "Z", "GMT")
_utc = True  # times in UTC; else in _zone
_zone: tzinfo | None = None  # None: the machine's local zone (DST rules per timestamp, from TZ / /etc/localtime)
_spec = DEFAULT
_dtm: ModuleType | None = None  # the datetime module, once imported


def _datetime() -> ModuleType:
    global _dtm
    if _dtm is None:
        import datetime as dtm

        _dtm = dtm
    return _dtm


def is_utc(spec: str) -> bool:
    """Does ``spec`` name UTC (see :func:`parse_zone`)?"""
    return spec.strip().upper() in _UTC_NAMES


def parse_zone(spec: str) -> tzinfo | None:
    """``UTC``, ``local`` or an IANA zone name -> a tzinfo (None for local); ValueError says what is accepted."""
    s = spec.strip()
    if s.upper() in _UTC_NAMES:
        return _datetime().UTC
    if s.lower() == "local":
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # (imports sysconfig: only for a named zone)

    try:
        return ZoneInfo(s)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {spec!r}: give UTC, local or an IANA name such as Europe/Berlin") from None


def set_zone(spec: str) -> None:
    """Use ``spec`` (see :func:`parse_zone`) for every time formatted from now on."""
    global _utc, _zone, _spec
    _utc = is_utc(spec)
    _zone, _spec = None if _utc else parse_zone(spec), spec


def zone_spec() -> str:
    """The zone as given (``UTC``, ``local``, ``Europe/Berlin``)."""
    return _spec


def default_spec() -> str:
    return os.environ.get(ENV) or DEFAULT


def _dt(ts: float) -> datetime | None:
    dtm = _dtm or _datetime()
    try:
        d = dtm.datetime.fromtimestamp(ts, dtm.UTC)
        return d if _utc else d.astimezone(_zone)  # astimezone(None): the local zone at ts
    except (ValueError, OverflowError, OSError):  # a corrupted frame timestamp (year > 9999)
        return None


def _frac(d: datetime, digits: int) -> str:
    return f".{d.microsecond:06d}"[: digits + 1] if digits > 0 else ""


def label(ts: float | None = None) -> str:
    """``UTC``, or the UTC offset at ``ts`` (now if None) in the zone in use: ``UTC-05:00``."""
    if _utc:
        return "UTC"
    dtm = _datetime()
    d = _dt(ts) if ts is not None else dtm.datetime.now(dtm.UTC).astimezone(_zone)
    if d is None:
        return "UTC"
    off = d.strftime("%z")  # -0500
    return f"UTC{off[:3]}:{off[3:]}"


def clock(ts: float | None, digits: int = 0) -> str:
    """``20:09:15`` (``digits`` of a second: ``20:09:15.691``), no zone: for cells under a labelled
    header. ``?`` for no time; the raw number for one that is not a date."""
    if ts is None:
        return "?"
    d = _dt(ts)
    if d is None:
        return f"{ts:.{digits}f}"
    return d.strftime("%H:%M:%S") + _frac(d, digits)


def at(ts: float | None, digits: int = 0) -> str:
    """``20:09:15 UTC`` / ``15:09:15 UTC-05:00``: a time in a sentence."""
    if ts is None:
        return "?"
    if _dt(ts) is None:
        return clock(ts, digits)
    return f"{clock(ts, digits)} {label(ts)}"


def stamp(ts: float | None, digits: int = 0) -> str:
    """``2026-12-05 07:10:03.123 UTC``: date, time and zone."""
    if ts is None:
        return "?"
    d = _dt(ts)
    if d is None:
        return clock(ts, digits)
    return f"{d.strftime('%Y-%m-%d %H:%M:%S')}{_frac(d, digits)} {label(ts)}"


def offset(seconds: float, span: float) -> str:
    """A time after the capture's first frame as an axis tick reads it, in one unit for the whole
    axis chosen by its ``span``: ms below a second, s below 1000 s, then min, then h. Seconds alone
    wrote a 4 ms span's ticks as "0.000964s" (and dropped the last one for want of room) and an
    hour's as "1.8e+03s". Zero is "0s" whatever the unit (every axis starts there)."""
    if not seconds:
        return "0s"
    if span < 1:
        return f"{seconds * 1000:.3g}ms"
    if span < 1000:
        return f"{seconds:.3g}s"
    if span < 60_000:
        return f"{seconds / 60:.3g}min"
    return f"{seconds / 3600:.3g}h"
