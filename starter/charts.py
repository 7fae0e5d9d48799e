"""Bar charts as SVG text, rendered on the server: the report page works offline, with no
script and no chart library. Every label is escaped; colours are presentation attributes (the
page's Content-Security-Policy allows no inline style)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "bar_chart"]

WIDTH = 720
LABEL_WIDTH = 170
VALUE_WIDTH = 110
BAR_HEIGHT = 14
GAP = 10
TOP = 40


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    colour: str


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Callable[[float], str],
    *,
    scale_max: float | None = None,
) -> str:
    """Horizontal grouped bars: one group per label, one bar per series; a missing value is
    drawn as no bar and '-'. `scale_max` fixes the axis (1.0 for rates)."""
    values = [v for s in series for v in s.values if v is not None]
    top = scale_max if scale_max is not None else max([*values, 0.0])
    top = top if top > 0 else 1.0
    span = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    group = BAR_HEIGHT * len(series) + GAP
    height = TOP + group * max(len(labels), 1) + GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" font-size="14" font-weight="bold" fill="#1f2933">'
        f"{escape(title)}</text>",
    ]
    x = LABEL_WIDTH
    for item in series if len(series) > 1 else []:
        parts.append(
            f'<rect x="{x}" y="22" width="10" height="10" fill="{escape(item.colour)}"/>'
            f'<text x="{x + 14}" y="31" font-size="11" fill="#1f2933">{escape(item.name)}</text>'
        )
        x += 14 + 7 * len(item.name) + 16
    if not labels:
        parts.append(
            f'<text x="{LABEL_WIDTH}" y="{TOP + 12}" font-size="12" fill="#52606d">no cases</text>'
        )
    for row, label in enumerate(labels):
        y0 = TOP + row * group
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y0 + BAR_HEIGHT * len(series) / 2 + 4:.1f}" '
            f'font-size="12" text-anchor="end" fill="#1f2933">{escape(label)}</text>'
        )
        for index, item in enumerate(series):
            value = item.values[row] if row < len(item.values) else None
            y = y0 + index * BAR_HEIGHT
            length = 0.0 if value is None else max(0.0, min(value / top, 1.0)) * span
            if value is not None:
                parts.append(
                    f'<rect class="bar" x="{LABEL_WIDTH}" y="{y + 1}" width="{length:.1f}" '
                    f'height="{BAR_HEIGHT - 2}" fill="{escape(item.colour)}">'
                    f"<title>{escape(f'{label}, {item.name}: {fmt(value)}')}</title></rect>"
                )
            parts.append(
                f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{y + BAR_HEIGHT - 3}" '
                f'font-size="11" fill="#52606d">{escape(fmt(value) if value is not None else "-")}'
                "</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
