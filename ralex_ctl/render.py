"""Rich renderings shared by the commands: the budget bar, the service table, spend tables."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from ralex.budget import alert_level, format_duration, usd
from ralex_ctl.stack import ServiceState

BLOCKS = " ▁▂▃▄▅▆▇█"


def bar(fraction: float, width: int = 30) -> Text:
    filled = max(0, min(width, round(fraction * width)))
    colour = "green" if fraction < 0.5 else "yellow" if fraction < 0.8 else "dark_orange" if fraction < 0.95 else "red"
    return Text("█" * filled, style=colour) + Text("░" * (width - filled), style="grey50")


def budget_line(budget: dict[str, Any]) -> Text:
    """`$1.23 / $5.00 ██████░░░ 25% · tier full · alert 0% · resets in 6h12m (Europe/Berlin)`"""
    fraction = budget["spent"] / budget["limit"] if budget["limit"] else 1.0
    now = datetime.fromisoformat(budget["now"])
    reset = datetime.fromisoformat(budget["resets_at"])
    line = Text(f"{usd(budget['spent'])} / {usd(budget['limit'])} ")
    line += bar(fraction)
    line += Text(f" {fraction:.0%} · tier {budget['tier']} · alert {alert_level(fraction)}% · "
                 f"resets in {format_duration((reset - now).total_seconds())} ({budget['timezone']})")
    if budget.get("reserved", 0) > 0:
        line += Text(f" · {usd(budget['reserved'])} held in flight", style="grey50")
    return line


def caps_line(budget: dict[str, Any]) -> Text:
    """`per-request caps: cheap $0.0010 · smart $0.0100 · yolo $0.0005`"""
    caps = " · ".join(f"{name} {usd(info['max_cost_per_request'])}" for name, info in budget.get("prices", {}).items())
    return Text(f"per-request caps: {caps}", style="grey50")


def services_table(states: list[ServiceState]) -> Table:
    table = Table(title="Ralex services", title_justify="left")
    for column in ("service", "state", "health", "ports"):
        table.add_column(column)
    for s in states:
        style = "green" if s.ok else "red" if s.state != "absent" else "grey50"
        table.add_row(s.service, Text(s.state, style=style), s.health, s.ports)
    return table


def sparkline(values: list[float]) -> str:
    top = max(values) if values and max(values) > 0 else 1.0
    return "".join(BLOCKS[min(8, round(v / top * 8))] for v in values)


def spend_table(spend: dict[str, Any]) -> Table:
    by = spend["by"]
    days = sorted({r["day"] for r in spend["rows"]})
    keys = sorted({r["key"] or "-" for r in spend["rows"]})
    cells: dict[tuple[str, str], float] = defaultdict(float)
    requests: dict[str, int] = defaultdict(int)
    for r in spend["rows"]:
        cells[(r["day"], r["key"] or "-")] += r["spent"]
        requests[r["day"]] += r["requests"]
    table = Table(title=f"Spend by {by}, last {spend['days']} days", title_justify="left", show_footer=True)
    table.add_column("day", footer="total")
    for key in keys:
        table.add_column(key, justify="right", footer=usd(sum(cells[(d, key)] for d in days)))
    totals = [sum(cells[(d, k)] for k in keys) for d in days]
    table.add_column("total", justify="right", footer=usd(sum(totals)))
    table.add_column("requests", justify="right", footer=str(sum(requests.values())))
    table.add_column("", footer=sparkline(totals))
    top = max(totals) if totals else 0
    for day, total in zip(days, totals, strict=True):
        table.add_row(day, *[usd(cells[(day, k)]) for k in keys], usd(total), str(requests[day]),
                      bar(total / top if top else 0, 12))
    return table


def spend_csv(spend: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", spend["by"], "requests", "refusals", "spent_usd"])
    for r in spend["rows"]:
        writer.writerow([r["day"], r["key"], r["requests"], r["refusals"], f"{r['spent']:.8f}"])
    return out.getvalue()
