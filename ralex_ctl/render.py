"""Rich renderings shared by the commands: the budget bar, the service table, `up` progress, spend tables."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from ralex.budget import alert_level, format_duration, usd
from ralex_ctl.stack import ServiceProgress, ServiceState, UpProgress
from ralex_ctl.textout import safe_line

BLOCKS = " ▁▂▃▄▅▆▇█"


def bar(fraction: float, width: int = 30) -> Text:
    filled = max(0, min(width, round(fraction * width)))
    colour = "green" if fraction < 0.5 else "yellow" if fraction < 0.8 else "dark_orange" if fraction < 0.95 else "red"
    return Text("█" * filled, style=colour) + Text("░" * (width - filled), style="grey50")


def budget_line(budget: dict[str, Any]) -> Text:
    """The bar, then the proxy's own one-line summary (the words the agent's TUI shows):
    `██████░░░ $1.23 of $5.00 spent (25%) · $3.77 left · tier full (smart and cheap) · resets at 00:00 UTC (in 6h12m)
    · alert 0%`."""
    fraction = budget["spent"] / budget["limit"] if budget["limit"] else 1.0
    thresholds = tuple(budget.get("alert_thresholds") or ())
    alert = alert_level(fraction, thresholds) if thresholds else alert_level(fraction)
    line = bar(fraction) + Text(" ")
    if budget.get("summary"):
        line += Text(f"{budget['summary']} · alert {alert}%")
    else:  # a proxy from before the summary
        now = datetime.fromisoformat(budget["now"])
        reset = datetime.fromisoformat(budget["resets_at"])
        line += Text(f"{usd(budget['spent'])} / {usd(budget['limit'])} {fraction:.0%} · tier {budget['tier']} · "
                     f"alert {alert}% · resets in {format_duration((reset - now).total_seconds())} "
                     f"({budget['timezone']})")
    if budget.get("reserved", 0) > 0:
        line += Text(f" · {usd(budget['reserved'])} held in flight", style="grey50")
    return line


def alerts_line(budget: dict[str, Any]) -> Text:
    """`alert thresholds: 60 % · 90 % (each notifies once per budget day)`"""
    levels = budget.get("alert_thresholds") or budget.get("settings", {}).get("alert_thresholds") or []
    shown = " · ".join(f"{level:g} %" for level in levels) or "none"
    return Text(f"alert thresholds: {shown} (each notifies once per budget day)", style="grey50")


def caps_line(budget: dict[str, Any]) -> Text:
    """`per-request caps: cheap $0.0010 · smart $0.0100 · yolo $0.0005`"""
    caps = " · ".join(f"{name} {usd(info['max_cost_per_request'])}" for name, info in budget.get("prices", {}).items())
    return Text(f"per-request caps: {caps}", style="grey50")


def services_table(states: list[ServiceState], title: str = "Ralex services") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("service", "state", "health", "ports"):
        table.add_column(column)
    for s in states:
        style = "green" if s.ok else "red" if s.state != "absent" else "grey50"
        table.add_row(safe_line(s.service), Text(s.state, style=style), safe_line(s.health), safe_line(s.ports))
    return table


PHASE_STYLES = {"ready": "green", "failed": "red", "building": "cyan", "pulling": "cyan", "waiting": "grey50"}


def seconds(value: float | None) -> str:
    """`9.2s`, `3m05s`; `-` for a step that did not happen."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes}m{rest:02d}s"


def _phase(s: ServiceProgress) -> Text:
    return Text(s.phase, style=PHASE_STYLES.get(s.phase, "yellow"))


def progress_table(progress: UpProgress, elapsed: float) -> Table:
    """The live view of `ralexctl up` in a terminal: one row per service, build step or health."""
    table = Table(title=f"Starting Ralex ({progress.project_name}) · {seconds(elapsed)}", title_justify="left")
    for column in ("service", "phase", "detail", "build", "ready after"):
        table.add_column(column, no_wrap=column != "detail")
    for s in progress.services.values():
        building = s.build_seconds if s.build_seconds is not None else (
            elapsed - s.build_began if s.build_began is not None else None)
        table.add_row(safe_line(s.service), _phase(s), Text(s.detail, style="grey50"),
                      seconds(building), seconds(s.ready_at))
    return table


def up_summary(progress: UpProgress, states: list[ServiceState]) -> Table:
    """Each service after `ralexctl up`: its state and health, how long its build took, when it was ready."""
    found = {s.service: s for s in states}
    table = Table(title="Ralex services", title_justify="left")
    for column in ("service", "state", "health", "build", "ready after"):
        table.add_column(column)
    for s in progress.services.values():
        state = found.get(s.service)
        style = "green" if state and state.ok else "red"
        table.add_row(safe_line(s.service), Text(state.state if state else "absent", style=style),
                      safe_line(state.health) if state else "-", seconds(s.build_seconds), seconds(s.ready_at))
    return table


def up_summary_lines(progress: UpProgress, states: list[ServiceState]) -> list[str]:
    """The same summary as plain lines, for logs and pipes: `litellm: running, healthy, built in 2m10s, ready
    after 2m31s`."""
    found = {s.service: s for s in states}
    lines = []
    for s in progress.services.values():
        state = found.get(s.service)
        parts = [state.state if state else "absent"]
        if state and state.health != "-":
            parts.append(state.health)
        if s.build_seconds is not None:
            parts.append(f"built in {seconds(s.build_seconds)}")
        if s.ready_at is not None:
            parts.append(f"ready after {seconds(s.ready_at)}")
        lines.append(f"{s.service}: {', '.join(parts)}")
    return lines


def sparkline(values: list[float]) -> str:
    top = max(values) if values and max(values) > 0 else 1.0
    return "".join(BLOCKS[min(8, round(v / top * 8))] for v in values)


def money_column(values: list[float]) -> Callable[[float], str]:
    """One format for every amount of a table: the most decimals :func:`usd` writes for any of them (at most
    6), so $0.000012 never stands beside a bare $0.01 and $0.0285 is not rounded to $0.03."""
    decimals = min(6, max((len(usd(v).rpartition(".")[2]) for v in values), default=2))
    return lambda amount: f"${amount:,.{decimals}f}"


def spend_table(spend: dict[str, Any]) -> Table:
    by = spend["by"]
    days = sorted({r["day"] for r in spend["rows"]})
    keys = sorted({r["key"] or "-" for r in spend["rows"]})
    cells: dict[tuple[str, str], float] = defaultdict(float)
    requests: dict[str, int] = defaultdict(int)
    for r in spend["rows"]:
        cells[(r["day"], r["key"] or "-")] += r["spent"]
        requests[r["day"]] += r["requests"]
    totals = [sum(cells[(d, k)] for k in keys) for d in days]
    money = money_column([*cells.values(), *totals])
    table = Table(title=f"Spend by {by}, last {spend['days']} days", title_justify="left", show_footer=True)
    table.add_column("day", footer="total", no_wrap=True)
    for key in keys:  # a name is never cut: it folds onto a second line when the terminal is narrow
        table.add_column(safe_line(key), justify="right", overflow="fold", min_width=min(len(safe_line(key)), 40),
                         footer=money(sum(cells[(d, key)] for d in days)))
    table.add_column("total", justify="right", footer=money(sum(totals)))
    table.add_column("requests", justify="right", footer=str(sum(requests.values())))
    table.add_column("vs top", footer=sparkline(totals) if len(days) > 1 else "", no_wrap=True, overflow="crop")
    top = max(totals) if totals else 0
    for day, total in zip(days, totals, strict=True):
        table.add_row(day, *[money(cells[(day, k)]) for k in keys], money(total), str(requests[day]),
                      bar(total / top if top else 0, 8))
    return table


def spend_csv(spend: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", spend["by"], "requests", "refusals", "spent_usd"])
    for r in spend["rows"]:
        writer.writerow([r["day"], r["key"], r["requests"], r["refusals"], f"{r['spent']:.8f}"])
    return out.getvalue()
