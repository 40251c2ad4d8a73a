"""Turning values into HTML: the template environment, its filters, and the delivery chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import attrs
import jinja2

__all__ = ["Bar", "Chart", "chart", "environment"]

_CHART_WIDTH: Final = 720
_CHART_HEIGHT: Final = 100


def _dt(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dt_local(value: datetime | None) -> str:
    # A change's time as it was made, offset included (the platform's own zone is UTC+8).
    return "" if value is None else value.isoformat(sep=" ", timespec="seconds")


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "none"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def _urlq(value: str) -> str:
    # One path segment: '/', '?', '#', '%' and everything else outside the safe set encoded.
    return quote(value, safe="")


def environment() -> jinja2.Environment:
    """The console's templates, escaping every value."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("loanstate.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(dt=_dt, dt_local=_dt_local, duration=_duration, urlq=_urlq)
    return env


@attrs.frozen
class Bar:
    x: float
    y: float
    h: float
    label: str


@attrs.frozen
class Chart:
    """An SVG bar chart's geometry, drawn by the template (no script needed)."""

    width: int
    height: int
    bar_width: float
    bars: tuple[Bar, ...]
    start: str
    end: str
    summary: str


def chart(per_minute: tuple[int, ...], start: datetime) -> Chart:
    """Bars for deliveries per minute from ``start``; their heights scale to the busiest minute."""
    count = max(len(per_minute), 1)
    step = _CHART_WIDTH / count
    peak = max(per_minute, default=0)
    bars = []
    for i, n in enumerate(per_minute):
        if n == 0:
            continue
        h = max(_CHART_HEIGHT * n / peak, 1.0)
        at = (start + timedelta(minutes=i)).strftime("%H:%M")
        bars.append(Bar(round(i * step, 2), round(_CHART_HEIGHT - h, 2), round(h, 2), f"{at} UTC: {n} delivered"))
    end = start + timedelta(minutes=count - 1)
    total = sum(per_minute)
    summary = f"{total} deliveries from {start:%H:%M} to {end:%H:%M} UTC; busiest minute: {peak}"
    return Chart(
        width=_CHART_WIDTH,
        height=_CHART_HEIGHT,
        bar_width=round(max(step * 0.8, 0.5), 2),
        bars=tuple(bars),
        start=f"{start:%H:%M}",
        end=f"{end:%H:%M} UTC",
        summary=summary,
    )


def render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    return env.get_template(name).render(context)
