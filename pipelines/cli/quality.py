"""`genaiops score`: faithfulness and toxicity of generated text, per record."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipelines.cli.common import EXIT_FAILED, EXIT_USAGE, ConfigOption, app, fail, load, out
from pipelines.offline import go_offline


@app.command("score")
def score(
    file: Annotated[Path, typer.Argument(help="JSON lines with 'input' (the source) and 'output' (the generated text).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write one JSON line of scores per record.")],
    metrics: Annotated[str, typer.Option(help="Comma-separated: faithfulness, toxicity, judge (an LLM with a rubric; "
                                              "its agreement with the shipped labelled set is printed).")
                       ] = "faithfulness,toxicity",
    config: ConfigOption = None,
    explain: Annotated[bool, typer.Option(help="Add the spans that made each record flagged ('findings').")] = False,
) -> None:
    """Score generated text: per record a score in [0, 1] (1 is good) and a flag per metric, in the input's order."""
    go_offline()
    from steps.scoring import METRICS, Scored, ScoringInputError, minilm_encoder, read_records, score_records

    chosen = [m.strip() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in (*METRICS, "judge")]
    if not chosen or unknown:
        fail(f"--metrics: unknown {unknown or 'empty'}; choose from {', '.join((*METRICS, 'judge'))}", EXIT_USAGE)
    settings, pipeline = load(config)
    try:
        records = read_records(file.read_bytes(), str(file))
    except OSError as exc:
        fail(f"{file}: cannot read ({exc})", EXIT_USAGE)
    except ScoringInputError as exc:
        fail(str(exc), EXIT_USAGE)
    encoder = minilm_encoder() if "faithfulness" in chosen else None
    scores = score_records(records, [m for m in chosen if m != "judge"], encoder, pipeline.evaluate.faithfulness,
                           pipeline.evaluate.toxicity)
    agreement = None
    if "judge" in chosen:
        from botocore.exceptions import BotoCoreError, ClientError

        from pipelines.backends import make_judge
        from steps.judge import agreement as measure

        judge_config = pipeline.evaluate.judge
        with out.status(f"judging {len(records)} records, and the labelled set for the judge's agreement…"):
            try:
                judge = make_judge(settings, judge_config)
                agreement = measure(judge, judge_config)
                verdicts = judge.judge([r[0] for r in records], [r[1] for r in records])
            except (BotoCoreError, ClientError, ValueError) as exc:
                fail(f"the judge failed: {exc}", EXIT_FAILED)
        scores["judge"] = [Scored(score=p, flagged=p < judge_config.threshold) for p in verdicts]
    lines = []
    for i in range(len(records)):
        row: dict[str, dict[str, Any]] = {}
        for metric in chosen:
            scored = scores[metric][i]
            row[metric] = {"score": round(scored.score, 4), "flagged": scored.flagged}
            if explain:
                row[metric]["findings"] = [f.model_dump() for f in scored.findings]
        lines.append(json.dumps(row, ensure_ascii=False))
    output.parent.mkdir(parents=True, exist_ok=True)
    # All or nothing: the scores appear under their name only once every line is written.
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    table = Table(title=f"{file}: {len(records)} records")
    for column in ("metric", "flagged", "flag rate", "mean score"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in chosen:
        flagged = sum(s.flagged for s in scores[metric])
        mean = sum(s.score for s in scores[metric]) / len(records)
        table.add_row(metric, str(flagged), f"{flagged / len(records):.1%}", f"{mean:.3f}")
    out.print(table)
    if agreement is not None:
        out.print(agreement.describe())
    out.print(f"wrote {len(records)} lines to {output}")
