"""The local alarm evaluator against CloudWatch's documented behaviour, and alarm state with its history.

The tables are those of the CloudWatch User Guide, "Configuring how CloudWatch alarms treat missing
data", section "How alarm state is evaluated when data is missing" (alarms-and-missing-data.html,
anchor #alarms-evaluating-missing-data): evaluation range 5, Evaluation Periods 3, Datapoints to Alarm
3 (first table) and 2 (second table, "M out of N"). A row lists the 5 most recent datapoints, oldest on
the left: 0 is not breaching, X breaching, - missing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitoring.alarms import AlarmSpec, AlarmStore, State, evaluate, put_metric_request
from monitoring.metrics import MetricMath, MetricStat

MODES = ("missing", "ignore", "breaching", "notBreaching")
RETAIN = "retain"
FIRST_TABLE = [  # Datapoints to Alarm 3 of Evaluation Periods 3
    ("0 - X - X", ["OK", "OK", "OK", "OK"]),
    ("0 - - - -", ["OK", "OK", "OK", "OK"]),
    ("- - - - -", ["INSUFFICIENT_DATA", RETAIN, "ALARM", "OK"]),
    ("0 X X - X", ["ALARM", "ALARM", "ALARM", "ALARM"]),
    ("- - X - -", ["ALARM", RETAIN, "ALARM", "OK"]),
]
SECOND_TABLE = [  # Datapoints to Alarm 2 of Evaluation Periods 3
    ("0 - X - X", ["ALARM", "ALARM", "ALARM", "ALARM"]),
    ("0 0 X 0 X", ["ALARM", "ALARM", "ALARM", "ALARM"]),
    ("0 - X - -", ["OK", "OK", "ALARM", "OK"]),
    ("- - - - 0", ["OK", "OK", "ALARM", "OK"]),
    ("- - - X -", ["ALARM", RETAIN, "ALARM", "OK"]),
]


def alarm(m: int, mode: str, n: int = 3) -> AlarmSpec:
    return AlarmSpec.model_validate({
        "name": "errors", "metric": {"name": "Invocation5XXErrors", "stat": "Sum"}, "period": 60,
        "evaluation_periods": n, "datapoints_to_alarm": m, "threshold": 1.0,
        "comparison": "GreaterThanOrEqualToThreshold", "treat_missing_data": mode})


def datapoints(row: str) -> list[float | None]:
    return [{"0": 0.0, "X": 5.0, "-": None}[mark] for mark in row.split()]


@pytest.mark.parametrize(("m", "row", "expected"), [(3, *r) for r in FIRST_TABLE] + [(2, *r) for r in SECOND_TABLE],
                         ids=[f"{m}of3 {r[0]}" for m, table in ((3, FIRST_TABLE), (2, SECOND_TABLE)) for r in table])
def test_every_row_of_the_documented_missing_data_tables_in_all_four_modes(m: int, row: str, expected: list[str]) -> None:
    for mode, want in zip(MODES, expected, strict=True):
        for current in ("OK", "ALARM", "INSUFFICIENT_DATA"):
            state = current if want == RETAIN else want
            got = evaluate(alarm(m, mode), datapoints(row), current)  # type: ignore[arg-type]
            assert got.state == state, (row, mode, current, got.reason)


def test_m_out_of_n_without_missing_data() -> None:
    three_of_five = alarm(3, "missing", n=5)
    assert evaluate(three_of_five, [5, 0, 5, 0, 5], "OK").state == "ALARM"
    assert evaluate(three_of_five, [5, 0, 5, 0, 0], "ALARM").state == "OK"
    assert evaluate(three_of_five, [5, 5, 5, 5, 0, 0, 0, 5, 5], "OK").state == "OK"  # only the last N count
    assert evaluate(alarm(1, "missing", n=1), [0, 0, 5], "OK").state == "ALARM"


def test_with_n_real_datapoints_in_the_range_missing_data_is_not_treated_at_all() -> None:
    # 3 real datapoints among the last 5 (evaluation range): the most recent 3 real ones decide in every mode.
    for mode in MODES:
        assert evaluate(alarm(3, mode), [5, 5, None, 5, None], "OK").state == "ALARM", mode
        assert evaluate(alarm(3, mode), [0, 5, None, 5, None], "ALARM").state == "OK", mode


def test_no_premature_alarm_from_one_recent_breach() -> None:
    # "- - - - X" and "- - - X -" with Datapoints to Alarm 3: not ALARM immediately when missing data is missing.
    for row in ("- - - - X", "- - - X -"):
        assert evaluate(alarm(3, "missing"), datapoints(row), "OK").state == "OK"
        assert evaluate(alarm(3, "breaching"), datapoints(row), "OK").state == "ALARM"


def test_the_reason_is_worded_as_cloudwatch_words_it() -> None:
    end = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    got = evaluate(alarm(3, "missing"), [None, None, 5.0, 7.0, 9.0], "OK", end=end)
    assert got.reason == ("Threshold Crossed: 3 out of the last 3 datapoints [9.0 (30/11/26 12:59:00), "
                          "7.0 (30/11/26 12:58:00), 5.0 (30/11/26 12:57:00)] were greater than or equal to the "
                          "threshold (1.0) (minimum 3 datapoints for OK -> ALARM transition).")
    filled = evaluate(alarm(2, "breaching"), [None, None, None, None, 0.0], "OK")
    assert filled.state == "ALARM" and "2 missing datapoints were treated as [Breaching]" in filled.reason
    assert evaluate(alarm(3, "missing"), [None] * 5, "OK").reason == "Insufficient Data: 5 datapoints were unknown."


def test_state_changes_are_kept_as_history_and_a_spec_update_keeps_the_state(tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "alarms")
    spec = alarm(2, "missing")
    assert store.put(spec).state == "INSUFFICIENT_DATA"
    sequence: list[tuple[list[float | None], State]] = [([0, 0, 0], "OK"), ([0, 0, 0], "OK"), ([0, 5, 5], "ALARM"),
                                                        ([5, 5, 5], "ALARM"), ([5, 0, 0], "OK")]
    changes = []
    for points, want in sequence:
        record, change = store.record(spec.name, evaluate(spec, points, store.get(spec.name).state))  # type: ignore[union-attr]
        assert record.state == want
        changes.append(change)
    assert [c is not None for c in changes] == [True, False, True, False, True]  # a change only when the state moves
    history = store.get(spec.name).history  # type: ignore[union-attr]
    assert [(h.old, h.new) for h in history] == [("INSUFFICIENT_DATA", "OK"), ("OK", "ALARM"), ("ALARM", "OK")]
    assert history[1].datapoints == [0, 5, 5] and "2 out of the last 3 datapoints" in history[1].reason
    retuned = store.put(spec.model_copy(update={"threshold": 10.0}))
    assert retuned.state == "OK" and len(retuned.history) == 3 and retuned.spec.threshold == 10.0


@pytest.mark.parametrize(("change", "where"), [
    ({"metric": {"name": "Invocations5XX", "stat": "Sum"}}, "unknown metric 'Invocations5XX'"),
    ({"metric": {"name": "Invocations", "stat": "Median"}}, "unknown statistic 'Median'"),
    ({"comparison": "Above"}, "comparison"),
    ({"treat_missing_data": "zero"}, "treat_missing_data"),
    ({"period": 90}, "period 90 s"),
    ({"datapoints_to_alarm": 9}, "exceeds evaluation_periods"),
    ({"metric": {"expression": "100 * e / n", "metrics": {"e": {"name": "Invocation5XXErrors", "stat": "Sum"}}}},
     "names n, which are not among its metrics"),
])
def test_a_bad_spec_is_refused_naming_what_is_wrong(change: dict[str, object], where: str) -> None:
    document = {"name": "x", "metric": {"name": "Invocations", "stat": "Sum"}, "threshold": 1,
                "comparison": "LessThanThreshold", **change}
    with pytest.raises(ValidationError, match=where):
        AlarmSpec.model_validate(document)


def test_the_cloudwatch_request_carries_the_spec() -> None:
    rate = AlarmSpec(name="summaries-a-5xx-rate", metric=MetricMath(
        expression="100 * errors / invocations", metrics={
            "errors": MetricStat(name="Invocation5XXErrors", stat="Sum", dimensions={"EndpointName": "s"}),
            "invocations": MetricStat(name="Invocations", stat="Sum", dimensions={"EndpointName": "s"})}),
        threshold=5, comparison="GreaterThanThreshold", evaluation_periods=5, datapoints_to_alarm=3)
    request = put_metric_request(rate, alarm_actions=["arn:aws:sns:us-east-1:123456789012:ops"], tags={"a": "b"})
    assert request["DatapointsToAlarm"] == 3 and request["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:ops"]
    assert [q["Id"] for q in request["Metrics"]] == ["errors", "invocations", "e1"]
    assert request["Metrics"][2] == {"Id": "e1", "Expression": "100 * errors / invocations",
                                     "Label": "summaries-a-5xx-rate", "ReturnData": True}
    p99 = put_metric_request(AlarmSpec(name="lat", metric=MetricStat(name="ModelLatency", stat="p99"), threshold=1,
                                       comparison="GreaterThanThreshold"))
    assert p99["ExtendedStatistic"] == "p99" and "Statistic" not in p99
