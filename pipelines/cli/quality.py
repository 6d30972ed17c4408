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


@app.command("feedback")
def feedback(
    endpoint: Annotated[str, typer.Argument(help="The endpoint that answered.")],
    inference_id: Annotated[str, typer.Argument(help="The request's InferenceId (data capture records it).")],
    rating: Annotated[str, typer.Option(help="good or bad.")],
    correction: Annotated[str | None, typer.Option(help="What the answer should have been (with --rating bad): it "
                                                        "becomes a record of the next retrain's data.")] = None,
    config: ConfigOption = None,
) -> None:
    """Record a person's judgement of one captured answer, through the approval server as the signed-in account
    (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD): a feedback account of `approval.feedback_accounts`."""
    go_offline()
    from steps.feedback import FeedbackError, check_feedback

    problems = check_feedback(endpoint, inference_id, rating, correction)
    if problems:
        fail("; ".join(problems), EXIT_USAGE)
    settings, _ = load(config)
    uri = settings.tracking_uri
    if not uri.startswith(("http://", "https://")):
        fail(f"feedback is recorded by the approval server, and the tracking URI is {uri}: set "
             "GENAIOPS_MLFLOW_TRACKING_URI to its URL (`genaiops ui` starts one)", EXIT_USAGE)
    from pipelines.backends import make_answers

    try:  # said here, before anything is sent: the answer must be one the endpoint gave and captured
        answer = make_answers(settings)(endpoint, {inference_id}).get(inference_id)
    except FeedbackError as exc:
        fail(str(exc), EXIT_FAILED)
    if answer is None:
        fail(f"inference_id: endpoint {endpoint} captured no answer for {inference_id!r} (a request names it with "
             "InferenceId; capture samples a share of requests; a failed request has no answer to judge)", EXIT_FAILED)
    status, body = post_feedback(uri, {"endpoint": endpoint, "inference_id": inference_id, "rating": rating,
                                       **({"correction": correction} if correction is not None else {})})
    if status != 201:
        fail(f"the approval server refused the feedback ({status}): {body.get('message', body)}",
             EXIT_USAGE if status == 400 else EXIT_FAILED)
    out.print(f"recorded feedback {body['id']} by {body['feedback']['by']}: {endpoint} answer {inference_id} "
              f"({answer.variant}{', ' + answer.served if answer.served else ''}) rated {rating}"
              + (", with a correction for the next retrain" if correction else ""))


def post_feedback(tracking_uri: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST the feedback to the approval server with the MLflow client's credentials; its status and JSON."""
    import base64
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/genaiops/feedback",
                                     data=json.dumps(fields).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"message": text.decode("utf-8", errors="replace")[:500] or exc.reason}
    except OSError as exc:
        fail(f"the approval server at {tracking_uri} cannot be reached: {exc}", EXIT_FAILED)
