"""One dashboard layout per endpoint, drawn twice: a CloudWatch dashboard body (`put_dashboard` on AWS) and,
locally, PNG charts in one HTML page with the alarms' states and last transitions beside them."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from monitoring.alarms import AlarmRecord
from monitoring.metrics import GENAIOPS_NAMESPACE, SAGEMAKER_NAMESPACE, MetricSource, MetricStat, metric_document


class Line(BaseModel):
    model_config = ConfigDict(frozen=True)
    label: str
    metric: MetricStat


class Panel(BaseModel):
    """One chart: a title, its unit and its lines."""

    model_config = ConfigDict(frozen=True)
    title: str
    unit: str
    lines: list[Line]


def panels(endpoint: str, variants: Sequence[str]) -> list[Panel]:
    """The layout: traffic, latency, errors per variant; then drift and quality."""
    def per_variant(name: str, stat: str, namespace: str = SAGEMAKER_NAMESPACE, label: str = "") -> list[Line]:
        return [Line(label=f"{v} {label or stat}", metric=MetricStat(namespace=namespace, name=name, stat=stat,
                                                            dimensions={"EndpointName": endpoint, "VariantName": v}))
                for v in variants]

    def endpoint_wide(name: str) -> Line:
        return Line(label=name, metric=MetricStat(namespace=GENAIOPS_NAMESPACE, name=name, stat="Maximum",
                                                  dimensions={"EndpointName": endpoint}))

    return [
        Panel(title="Invocations per variant", unit="count", lines=per_variant("Invocations", "Sum", label="invocations")),
        Panel(title="Model latency p50 / p99", unit="µs",
              lines=[*per_variant("ModelLatency", "p50"), *per_variant("ModelLatency", "p99")]),
        Panel(title="Errors: 4XX and 5XX", unit="count",
              lines=[*per_variant("Invocation4XXErrors", "Sum", label="4XX"),
                     *per_variant("Invocation5XXErrors", "Sum", label="5XX")]),
        Panel(title="Overhead latency p99", unit="µs", lines=per_variant("OverheadLatency", "p99")),
        Panel(title="Input drift (PSI of token lengths; embedding distance)", unit="",
              lines=[endpoint_wide("InputLengthPSI"), endpoint_wide("EmbeddingDrift")]),
        Panel(title="Output quality: empty outputs, disagreement with the primary variant", unit="%",
              lines=[*per_variant("EmptyOutputRate", "Maximum", GENAIOPS_NAMESPACE, "empty outputs"),
                     *per_variant("DisagreementRate", "Maximum", GENAIOPS_NAMESPACE, "disagreement")]),
        Panel(title="Generation quality: unfaithful and toxic outputs (a scored sample)", unit="%",
              lines=[*per_variant("UnfaithfulOutputRate", "Maximum", GENAIOPS_NAMESPACE, "unfaithful"),
                     *per_variant("ToxicOutputRate", "Maximum", GENAIOPS_NAMESPACE, "toxic")]),
        Panel(title="Tokens per variant: input and output (what the cost per token is of)", unit="tokens",
              lines=[*per_variant("InputTokenCount", "Sum", GENAIOPS_NAMESPACE, "input tokens"),
                     *per_variant("OutputTokenCount", "Sum", GENAIOPS_NAMESPACE, "output tokens")]),
    ]


def cloudwatch_body(layout: Sequence[Panel], *, region: str, period: int, alarm_arns: Sequence[str]) -> dict[str, Any]:
    """A CloudWatch dashboard body: one metric widget per panel (two a row), then the alarms."""
    widgets: list[dict[str, Any]] = []
    for index, panel in enumerate(layout):
        metrics = []
        for line in panel.lines:
            document = metric_document(line.metric)
            dims = [part for d in document["Dimensions"] for part in (d["Name"], d["Value"])]
            metrics.append([document["Namespace"], document["MetricName"], *dims,
                            {"stat": line.metric.stat, "label": line.label}])
        widgets.append({"type": "metric", "x": 12 * (index % 2), "y": 6 * (index // 2), "width": 12, "height": 6,
                        "properties": {"title": panel.title, "region": region, "view": "timeSeries",
                                       "period": period, "metrics": metrics}})
    if alarm_arns:
        widgets.append({"type": "alarm", "x": 0, "y": 6 * ((len(layout) + 1) // 2), "width": 24, "height": 4,
                        "properties": {"title": "Alarms", "alarms": list(alarm_arns)}})
    return {"widgets": widgets}


def render_local(endpoint: str, layout: Sequence[Panel], source: MetricSource, alarms: Sequence[AlarmRecord],
                 folder: Path, *, end: datetime, hours: float = 3, period: int = 60) -> Path:
    """PNG charts of the last `hours` and an index.html with them and the alarms; returns the page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    start = end - timedelta(hours=hours)
    count = int((end - start).total_seconds() // period)
    times = [start + timedelta(seconds=period * (i + 0.5)) for i in range(count)]
    drawn_series = [[[(t, v) for t, v in zip(times, source.datapoints(line.metric, period=period, start=start, end=end),
                                             strict=False) if v is not None] for line in panel.lines] for panel in layout]
    first = min((points[0][0] for lines in drawn_series for points in lines if points), default=start)
    shown_from = max(start, first - timedelta(seconds=2 * period))  # short traffic is not squeezed into a corner
    thresholds = {json.dumps(r.spec.metric.model_dump(), sort_keys=True): r for r in alarms
                  if isinstance(r.spec.metric, MetricStat)}
    images = []
    for index, (panel, lines) in enumerate(zip(layout, drawn_series, strict=True)):
        figure, axes = plt.subplots(figsize=(7.5, 3.2), dpi=100)
        drawn = 0
        for line, points in zip(panel.lines, lines, strict=True):
            if points:
                axes.plot(mdates.date2num([t for t, _ in points]), [v for _, v in points], marker="o", markersize=3,
                          label=line.label)
                drawn += 1
            alarm = thresholds.get(json.dumps(line.metric.model_dump(), sort_keys=True))
            if alarm is None:
                continue
            top = max((abs(v) for _, v in points), default=0.0)
            if top and alarm.spec.threshold > 4 * top:  # far above the data: named, not drawn, so the data stays legible
                axes.plot([], [], linestyle="--", color=COLOURS[alarm.state],
                          label=f"{alarm.spec.name} ({alarm.state}): threshold {alarm.spec.threshold:g}, above the chart")
            else:
                axes.axhline(alarm.spec.threshold, linestyle="--", linewidth=1, color=COLOURS[alarm.state],
                             label=f"{alarm.spec.name} ({alarm.state})")
        axes.set_title(panel.title, fontsize=10)
        axes.set_ylabel(panel.unit)
        axes.set_xlim(float(mdates.date2num(shown_from)), float(mdates.date2num(end)))
        locator = mdates.AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7, loc="upper left")
        else:
            axes.text(0.5, 0.5, "no data in this window", ha="center", va="center", transform=axes.transAxes,
                      color="#888888")
        figure.tight_layout()
        name = f"panel-{index}.png"
        figure.savefig(folder / name)
        plt.close(figure)
        images.append((panel.title, name))
    page = folder / "index.html"
    page.write_text(_page(endpoint, images, alarms, shown_from, end), encoding="utf-8")
    return page


COLOURS = {"OK": "#228833", "ALARM": "#cc3311", "INSUFFICIENT_DATA": "#bb8800"}


def _page(endpoint: str, images: list[tuple[str, str]], alarms: Sequence[AlarmRecord], start: datetime,
          end: datetime) -> str:
    rows = []
    for record in alarms:
        last = record.history[-1] if record.history else None
        change = f"{last.at} {last.old} → {last.new}" if last else "no change yet"
        rows.append(f"<tr><td>{html.escape(record.spec.name)}</td>"
                    f"<td style='color:{COLOURS[record.state]};font-weight:bold'>{record.state}</td>"
                    f"<td>{html.escape(change)}</td><td>{html.escape(record.reason)}</td></tr>")
    charts = "".join(f"<figure><img src='{name}' alt='{html.escape(title)}'></figure>" for title, name in images)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(endpoint)}: dashboard</title>
<style>body{{font-family:sans-serif;margin:1.5em}} .side{{display:grid;grid-template-columns:760px 1fr;gap:24px;
align-items:start}} figure{{margin:0 0 8px 0}} table{{border-collapse:collapse;font-size:12px;table-layout:fixed;
width:100%}} td,th{{border:1px solid #ccc;padding:4px 6px;vertical-align:top;overflow-wrap:anywhere;text-align:left}}
col.name{{width:26%}} col.state{{width:13%}} col.when{{width:17%}} col.reason{{width:44%}}</style></head>
<body><h1>{html.escape(endpoint)}</h1>
<p>{start:%Y-%m-%d %H:%M} – {end:%H:%M} UTC</p>
<div class="side"><div>{charts}</div>
<div><h2>Alarms</h2><table><colgroup><col class="name"><col class="state"><col class="when"><col class="reason">
</colgroup><tr><th>alarm</th><th>state</th><th>last transition</th><th>reason</th></tr>
{''.join(rows) or '<tr><td colspan=4>no alarms: run genaiops monitor run</td></tr>'}</table></div></div>
</body></html>
"""
