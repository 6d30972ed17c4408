"""The gate report an approver reads: verdict, every gate with its numbers, charts, example outputs.

Rendered as Markdown and as a self-contained folder of HTML plus PNG charts (metric bars per
model, deltas with their confidence intervals, output length histogram).
"""

from __future__ import annotations

import html
from pathlib import Path

from steps.evaluate import QUALITY, Bootstrap, EvalResult, GateReport, ModelScores, bootstrap_delta
from steps.scoring import Finding

SHOWN = ("rougeL", "rouge1", "rouge2", "bleu", "exact_match", "length_ratio", "empty_rate", "blocklist_rate",
         "unfaithful_rate", "toxic_rate", "latency_p50", "latency_p95", "output_tokens_per_s",
         "cost_per_1k_output_tokens", "general.accuracy", "general.rougeL")
DELTAS = ("rougeL", "rouge1", "rouge2", "bleu", "general.accuracy")
COLOURS = {"candidate": "#4477aa", "base": "#bbbbbb", "champion": "#228833", "reference": "#ccbb44"}


def _models(result: EvalResult) -> list[ModelScores]:
    return [m for m in (result.candidate, result.base, result.champion) if m is not None]


def _label(result: EvalResult, model: ModelScores) -> str:
    if model is result.champion and result.champion_version:
        return f"champion (v{result.champion_version})"
    return model.name


def _findings(model: ModelScores, i: int) -> list[tuple[str, Finding]]:
    return sorted(((metric, f) for metric in QUALITY for f in model.findings.get(metric, [[]] * (i + 1))[i]),
                  key=lambda mf: mf[1].start)


def _spans(text: str, findings: list[tuple[str, Finding]], mark: tuple[str, str], escape: bool) -> str:
    """`text` with each flagged span wrapped in `mark`; overlapping spans are marked once."""
    pieces, at = [], 0
    for _, f in findings:
        if f.start < at or f.end > len(text):
            continue
        plain = text[at : f.start]
        pieces += [html.escape(plain) if escape else plain, mark[0],
                   html.escape(text[f.start : f.end]) if escape else text[f.start : f.end], mark[1]]
        at = f.end
    pieces.append(html.escape(text[at:]) if escape else text[at:])
    return "".join(pieces)


def _flag_note(findings: list[tuple[str, Finding]]) -> str:
    labels = {"unfaithful_rate": "unfaithful", "toxic_rate": "toxic"}
    return "; ".join(f"{labels[m]}: {f.reason}" for m, f in findings)


def _shown(model: ModelScores, name: str) -> str:
    return f"{model.metrics[name]:.4f}" if name in model.metrics else "n/a"


def metrics_table(result: EvalResult) -> str:
    models = _models(result)
    header = "| metric | " + " | ".join(_label(result, m) for m in models) + " | candidate − base |"
    lines = [header, "| --- |" + " ---: |" * (len(models) + 1)]
    for name in SHOWN:
        if name not in result.candidate.metrics:
            continue
        values = " | ".join(_shown(m, name) for m in models)
        delta = f"{result.candidate.metrics[name] - result.base.metrics[name]:+.4f}" \
            if name in result.base.metrics else "n/a"
        lines.append(f"| {name} | {values} | {delta} |")
    return "\n".join(lines)


def gates_table(report: GateReport) -> str:
    lines = ["| gate | metric | rule | threshold | value | 95% interval | result |",
             "| --- | --- | --- | ---: | ---: | --- | --- |"]
    for c in report.checks:
        interval = f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]" if c.ci_low is not None else ""
        result = "skipped (no champion)" if c.skipped else ("pass" if c.passed else "**FAIL**")
        lines.append(f"| {c.kind} | {c.metric} | {c.rule} | {c.threshold:g} | {c.value:+.4f} | {interval} | {result} |")
    return "\n".join(lines)


def to_markdown(result: EvalResult, report: GateReport, *, dataset_hash: str, examples: int = 8) -> str:
    lines = [
        f"# Gate report: {'PASSED' if report.passed else 'FAILED'}", "",
        f"Held-out samples: {result.n_samples} · general-skills items: {len(result.general_references)} · "
        f"dataset `{dataset_hash[:12]}`", "",
        "## Gates", "", gates_table(report), "",
        "## Metrics", "", metrics_table(result), "",
        "![metrics](metrics.png) ![deltas](deltas.png) ![lengths](lengths.png)", "",
        "## Examples", "",
        "| reference | " + " | ".join(_label(result, m) for m in _models(result)) + " |",
        "| --- |" + " --- |" * len(_models(result)),
    ]
    for i in range(min(examples, result.n_samples)):
        cells = [result.references[i]]
        for m in _models(result):
            found = _findings(m, i)
            text = _spans(m.predictions[i], found, ("**", "**"), escape=False) or "(empty)"
            cells.append(f"⚑ {text} ({_flag_note(found)})" if found else text)
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    flagged = {_label(result, m): sum(bool(_findings(m, i)) for i in range(result.n_samples)) for m in _models(result)}
    if any(flagged.values()):
        lines += ["", "⚑ marks an output the faithfulness or toxicity scorer flagged; **bold** spans are why. "
                  "Flagged outputs of all held-out samples: " + ", ".join(f"{k} {v}" for k, v in flagged.items()) + "."]
    return "\n".join(lines) + "\n"


def to_html(result: EvalResult, report: GateReport, *, dataset_hash: str, examples: int = 12) -> str:
    def table(rows: list[list[str]], header: list[str], classes: list[str] | None = None, raw: bool = False) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            f"<tr class='{classes[i] if classes else ''}'>"
            + "".join(f"<td>{c if raw else html.escape(c)}</td>" for c in row) + "</tr>"
            for i, row in enumerate(rows))
        return f"<table><tr>{head}</tr>{body}</table>"

    gate_rows = [[c.kind, c.metric, c.rule, f"{c.threshold:g}", f"{c.value:+.4f}",
                  f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]" if c.ci_low is not None else "",
                  "skipped (no champion)" if c.skipped else ("pass" if c.passed else "FAIL")] for c in report.checks]
    models = _models(result)
    metric_rows = [[name, *(_shown(m, name) for m in models)] for name in SHOWN if name in result.candidate.metrics]
    example_rows = []
    for i in range(min(examples, result.n_samples)):
        row = [html.escape(result.references[i])]
        for m in models:
            found = _findings(m, i)
            text = _spans(m.predictions[i], found, ("<mark>", "</mark>"), escape=True) or "(empty)"
            row.append(f"<span class=flagged title='{html.escape(_flag_note(found), quote=True)}'>⚑ {text}</span>"
                       f"<br><small>{html.escape(_flag_note(found))}</small>" if found else text)
        example_rows.append(row)
    verdict = "PASSED" if report.passed else "FAILED"
    return (
        "<!doctype html><meta charset=utf-8><title>Gate report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}.fail{background:#fdd}.pass{background:#efe}"
        "img{max-width:32%;margin-right:1%}mark{background:#fc9}.flagged{color:#800}h1.FAILED{color:#b00}h1.PASSED{color:#070}</style>"
        f"<h1 class={verdict}>Gate report: {verdict}</h1>"
        f"<p>Held-out samples: {result.n_samples} · general-skills items: {len(result.general_references)} · "
        f"dataset <code>{html.escape(dataset_hash[:12])}</code></p>"
        "<h2>Gates</h2>"
        + table(gate_rows, ["gate", "metric", "rule", "threshold", "value", "95% interval", "result"],
                ["pass" if c.passed else "fail" for c in report.checks])
        + "<h2>Metrics</h2>" + table(metric_rows, ["metric", *(_label(result, m) for m in models)])
        + "<p><img src=metrics.png alt='metrics per model'><img src=deltas.png alt='deltas with intervals'>"
          "<img src=lengths.png alt='output lengths'></p>"
        + "<h2>Examples</h2>" + table(example_rows, ["reference", *(_label(result, m) for m in models)], raw=True)
    )


def write_report(result: EvalResult, report: GateReport, folder: Path, *, dataset_hash: str,
                 bootstrap: Bootstrap | None = None) -> Path:
    """Write gate_report.md, gate_report.html with its charts, and gate_report.json into `folder`; returns the HTML path."""
    bootstrap = bootstrap or Bootstrap()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    models = _models(result)

    names = [n for n in ("rougeL", "rouge1", "rouge2", "bleu", "exact_match", "general.accuracy")
             if n in result.candidate.metrics]
    figure, axes = plt.subplots(figsize=(8, 4), dpi=110)
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        axes.bar([x + i * width for x in range(len(names))], [model.metrics[n] for n in names], width,
                 label=_label(result, model), color=COLOURS.get(model.name, "#888888"))
    axes.set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(names))], names, rotation=20)
    axes.set_ylim(0, 1)
    axes.set_title("Held-out metrics per model")
    axes.legend()
    figure.tight_layout()
    figure.savefig(folder / "metrics.png")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(8, 4), dpi=110)
    deltas = [n for n in DELTAS if n in result.candidate.metrics]
    others = [result.base] + ([result.champion] if result.champion is not None else [])
    width = 0.8 / len(others)
    for i, other in enumerate(others):
        intervals = [bootstrap_delta(n, result, other, bootstrap) for n in deltas]
        points = [p for p, _, _ in intervals]
        errors = [[p - lo for p, lo, _ in intervals], [hi - p for p, _, hi in intervals]]
        axes.bar([x + i * width for x in range(len(deltas))], points, width, yerr=errors, capsize=4,
                 label=f"candidate − {_label(result, other)}", color=COLOURS.get(other.name, "#888888"))
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks([x + width * (len(others) - 1) / 2 for x in range(len(deltas))], deltas, rotation=20)
    axes.set_title(f"Deltas with {bootstrap.confidence:.0%} bootstrap intervals")
    axes.legend()
    figure.tight_layout()
    figure.savefig(folder / "deltas.png")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(8, 4), dpi=110)
    lengths = {"reference": [len(r.split()) for r in result.references],
               **{_label(result, m): [len(p.split()) for p in m.predictions] for m in models}}
    top = max(max(v, default=0) for v in lengths.values()) + 2
    for label, values in lengths.items():
        axes.hist(values, bins=range(0, top, 2), alpha=0.5, label=label,
                  color=COLOURS.get(label.split(" ")[0], "#888888"))
    axes.set_xlabel("words per output")
    axes.set_title("Output lengths")
    axes.legend()
    figure.tight_layout()
    figure.savefig(folder / "lengths.png")
    plt.close(figure)

    (folder / "gate_report.json").write_text(report.to_json(dataset_hash), encoding="utf-8")
    (folder / "gate_report.md").write_text(to_markdown(result, report, dataset_hash=dataset_hash), encoding="utf-8")
    page = folder / "gate_report.html"
    page.write_text(to_html(result, report, dataset_hash=dataset_hash), encoding="utf-8")
    return page
