"""Tables for an 80-column terminal: local time to the minute, two decimals, `--wide` for all.

A technician reads the gateway over SSH on a small screen: the default shows the columns that
matter, times as `YYYY-MM-DD HH:MM` in the gateway's time zone and amounts to 2 decimals;
`--wide` shows every column as stored (exact amounts, ISO times in UTC).  `--json` is never
shortened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import click

WIDTH = 80


def wide_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--wide", "-w", is_flag=True,
                        help="Every column, exact values and UTC times (wider than 80).")(func)


def local_time(value: Any, tz: Any = None) -> str:
    """An ISO timestamp as local `YYYY-MM-DD HH:MM` ('' for none; text that is no time
    stays as it is)."""
    if value in (None, ""):
        return ""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(tz)
    return moment.strftime("%Y-%m-%d %H:%M")


def two_places(value: Any) -> str:
    """A decimal amount or reading to 2 places (as text; non-numbers unchanged)."""
    if value in (None, ""):
        return ""
    try:
        return str(Decimal(str(value)).quantize(Decimal("0.01")))
    except (InvalidOperation, ValueError):
        return str(value)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
          headers: dict[str, str] | None = None, squeeze: str | None = None,
          width: int | None = WIDTH) -> None:
    """Print rows as columns; when `width` is set, the `squeeze` column is clipped so each
    line fits (the others are short by construction)."""
    if not rows:
        click.echo("(none)")
        return
    names = {c: (headers or {}).get(c, c).upper() for c in columns}
    cells = [{c: "" if r.get(c) is None else str(r.get(c)) for c in columns} for r in rows]
    widths = {c: max(len(names[c]), *(len(r[c]) for r in cells)) for c in columns}
    if width is not None and squeeze in widths:
        others = sum(widths[c] for c in columns if c != squeeze) + 2 * (len(columns) - 1)
        widths[squeeze] = max(len(names[squeeze]), min(widths[squeeze], width - others))
    click.echo("  ".join(names[c].ljust(widths[c]) for c in columns).rstrip())
    for r in cells:
        click.echo("  ".join(clip(r[c], widths[c]).ljust(widths[c]) for c in columns).rstrip())


def ago(seconds: float) -> str:
    """`42 s`, `7 min`, `3 h`, `2 d`: an age at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"
