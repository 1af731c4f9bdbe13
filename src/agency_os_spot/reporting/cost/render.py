"""The cost report as files: Markdown (the table, how it was computed, the sources), JSON and a PNG
bar chart; only the files whose content changed are written."""

from __future__ import annotations

import io
import json
import textwrap

from agency_os_spot.reporting.cost.report import CostReport


def _money(report: CostReport, usd: float) -> str:
    sign = "-" if usd < -0.005 else ""
    return f"{sign}A${abs(report.aud(usd)):,.2f} ({sign}US${abs(usd):,.2f})"


def render_markdown(report: CostReport) -> str:
    """The Markdown report: the cost table, then how it was computed and the sources."""
    where = {"aws": "AWS", "gcp": "GCP"}[report.provider]
    out = [
        f"# Agency OS: monthly compute cost, current vs proposed ({where} {report.region})",
        "",
        f"Computed {report.generated_on} from src/agency_os_spot/catalog.yml, the inventory's capacity settings and the dated "
        "prices listed under Sources. Per month; A$ first, US$ in brackets.",
        "",
        "| Component | Current | Proposed | Savings |",
        "|---|---:|---:|---:|",
    ]
    out += [
        f"| {line.component} | {_money(report, line.current_usd)} | {_money(report, line.proposed_usd)} | "
        f"{_money(report, line.savings_usd)} |"
        for line in report.lines
    ]
    out.append(
        f"| **Total** | **{_money(report, report.current_usd)}** | **{_money(report, report.proposed_usd)}** | "
        f"**{_money(report, report.savings_usd)}** |"
    )
    share = 100 * report.savings_usd / report.current_usd if report.current_usd else 0.0
    out += ["", f"Savings: {_money(report, report.savings_usd)} per month ({share:.0f}% of today's cost).", ""]

    out += [
        "## Railway usage by flow",
        "",
        "| Flow | Tier | vCPU | Memory (GB) | Egress (GB) | Current | Proposed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    out += [
        f"| `{r['flow']}` | {r['tier']} | {r['vcpu']:g} | {r['memory_gb']:g} | {r['egress_gb']:g} | "
        f"US${r['current_usd']:.2f} | US${r['proposed_usd']:.2f} |"
        for r in report.railway_flows
    ]
    out.append("")
    if report.provider == "aws":
        out += [
            "## AWS Spot pools",
            "",
            "| Instance type | Zone | Spot average (US$/h) | On-demand (US$/h) | Discount | Under cap |",
            "|---|---|---:|---:|---:|---|",
        ]
        out += [
            f"| {p['instance_type']} | {p['availability_zone']} | {p['average_usd_per_hour']:.5f} | "
            f"{p['on_demand_usd_per_hour']:.4f} | {p['discount_pct']}% | {'yes' if p['under_cap'] else 'no'} |"
            for p in report.spot_detail["pools"]
        ]
        out.append("")
    out += ["## How it was computed", ""]
    out += [f"- {note}" for note in report.notes]
    out += ["", "## Sources", "", "| Setting | Value | Unit | Source | Date |", "|---|---:|---|---|---|"]
    out += [f"| `{p.key}` | {p.value:g} | {p.unit} | {p.source} | {p.date} |" for p in report.sources]
    return "\n".join(out) + "\n"


def render_chart(report: CostReport) -> bytes:
    """A PNG bar chart: current vs proposed per component (A$ per month)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (heavy import, only here)
    from matplotlib.figure import Figure  # noqa: PLC0415

    # Component names without their parenthesised detail (the Markdown table has it).
    labels = [textwrap.fill(line.component.split(" (")[0], 16) for line in report.lines] + ["Total"]
    current = [report.aud(line.current_usd) for line in report.lines] + [report.aud(report.current_usd)]
    proposed = [report.aud(line.proposed_usd) for line in report.lines] + [report.aud(report.proposed_usd)]
    fig = Figure(figsize=(max(8.0, 1.6 * len(labels)), 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = range(len(labels))
    width = 0.38
    bars_now = ax.bar([x - width / 2 for x in xs], current, width, label="Current", color="#8c8c8c")
    bars_then = ax.bar([x + width / 2 for x in xs], proposed, width, label="Proposed", color="#2b7bba")
    ax.bar_label(bars_now, fmt="%.2f", fontsize=7, padding=2)
    ax.bar_label(bars_then, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel(r"A\$ per month")
    where = {"aws": "AWS", "gcp": "GCP"}[report.provider]
    title = (
        f"Agency OS compute per month: current A${report.aud(report.current_usd):,.2f}, proposed "
        f"A${report.aud(report.proposed_usd):,.2f} ({where} {report.region}, {report.generated_on})"
    )
    ax.set_title(title.replace("$", r"\$"), fontsize=9)  # a bare $ starts matplotlib's math text
    ax.legend()
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def render_files(report: CostReport) -> dict[str, bytes]:
    """File name -> content of everything the report writes."""
    stem = f"cost_report_{report.provider}"
    return {
        f"{stem}.md": render_markdown(report).encode(),
        f"{stem}.json": (json.dumps(report.as_dict(), indent=2) + "\n").encode(),
        f"{stem}.png": render_chart(report),
    }
