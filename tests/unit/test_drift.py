"""Drift and quality statistics, and the capture reader over a folder and over S3 (moto)."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from local_aws.capture import capture_record
from monitoring.drift import disagreement, empty_rate, ks, psi, read_capture
from steps.artifacts import LocalStore, S3Store
from steps.prompts import raw_input

TEMPLATE = "Summarize the following conversation.\n\n{input}\n\nSummary:"


def test_raw_input_undoes_the_template() -> None:
    assert raw_input(TEMPLATE, TEMPLATE.format(input="Ana: hi.\nBen: bye.")) == "Ana: hi.\nBen: bye."
    assert raw_input("{input}", "as is") == "as is"
    assert raw_input(TEMPLATE, "not templated") == "not templated"


def test_psi_and_ks_separate_a_shifted_sample_from_a_like_one() -> None:
    rng = random.Random(0)
    reference = [rng.gauss(100, 15) for _ in range(500)]
    like = [rng.gauss(100, 15) for _ in range(80)]
    shifted = [rng.gauss(160, 15) for _ in range(80)]
    assert psi(reference, like) < 0.25 < 1.0 < psi(reference, shifted)  # 0.25: the usual "shifted" line
    assert ks(reference, like) < 0.2 < 0.9 < ks(reference, shifted)
    with pytest.raises(ValueError, match="both sides"):
        psi(reference, [])


def test_empty_rate_counts_blank_outputs() -> None:
    assert empty_rate(["a", "", "  ", "b"]) == 50.0 and empty_rate([]) == 0.0


def write(store: LocalStore | S3Store, variant: str, when: datetime, outputs: list[str] | None,
          event_id: str, text: str = "Ana: the parcel is late.") -> None:
    answer = json.dumps([{"generated_text": o} for o in outputs or []]).encode()
    record = capture_record(json.dumps({"inputs": text}).encode(), answer if outputs is not None else b"{}",
                            content_type="application/json", accept="application/json", inference_id=None,
                            when=when, error=outputs is None, event_id=event_id)
    key = f"summaries/{variant}/{when:%Y/%m/%d/%H}/{when:%M-%S}-{event_id}.jsonl"
    store.put(key, (json.dumps(record) + "\n").encode())


def check_reader(store: LocalStore | S3Store) -> None:
    start = datetime(2026, 11, 30, 10, 59, tzinfo=UTC)
    for i in range(4):
        when = start + timedelta(minutes=i)
        write(store, "champion", when, [f"answer {i}"], f"e{i}")
        write(store, "shadow", when + timedelta(seconds=1), [f"answer {i}" if i % 2 else "other"], f"e{i}")
    write(store, "champion", start + timedelta(minutes=5), None, "e9")  # a failed invocation
    store.put("summaries/champion/2026/11/30/11/torn.jsonl", b'{"captureData": {"endpointIn')  # being written
    now = start + timedelta(hours=1)
    records, cursor = read_capture(store, "summaries", now=now)
    assert [r.event_id for r in records if r.variant == "champion"] == ["e0", "e1", "e2", "e3", "e9"]
    assert records[-1].error and records[-1].outputs is None
    assert records[0].inputs == ["Ana: the parcel is late."] and records[0].outputs == ["answer 0"]
    assert disagreement(records, "champion") == {"shadow": 50.0}  # e0 and e2 differ, paired by event id
    assert read_capture(store, "summaries", cursor, now=now)[0] == []  # nothing twice
    write(store, "champion", start + timedelta(minutes=1, seconds=30), ["late"], "e5")  # arrives late, dated earlier
    later, cursor = read_capture(store, "summaries", cursor, now=now)
    assert [r.event_id for r in later] == ["e5"]
    if isinstance(store, LocalStore):  # a file that grows: only its new lines are read
        grown = store.root / "summaries/champion/2026/11/30/10/59-00-e0.jsonl"
        with grown.open("a") as out:
            out.write(grown.read_text().replace('"e0"', '"e6"'))
        assert [r.event_id for r in read_capture(store, "summaries", cursor, now=now)[0]] == ["e6"]


SAGEMAKER_LINES = [  # as SageMaker writes capture: whole seconds, and base64 when no content type was kept as text
    {"captureData": {"endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                       "data": '{"inputs": "Ana: hi."}', "encoding": "JSON"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": '[{"generated_text": "Ana greets."}]', "encoding": "JSON"}},
     "eventMetadata": {"eventId": "a1", "inferenceTime": "2026-11-30T10:15:25Z"}, "eventVersion": "0"},
    {"captureData": {"endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                       "data": base64.b64encode(b'{"inputs": ["Ben: bye."]}').decode(),
                                       "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": base64.b64encode(b'[{"generated_text": "Ben leaves."}]').decode(),
                                        "encoding": "BASE64"}},
     "eventMetadata": {"eventId": "a2", "inferenceId": "t-7", "inferenceTime": "2026-11-30T10:15:26Z"},
     "eventVersion": "0"},
]


def test_sagemakers_own_capture_lines_are_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "capture")
    store.put("summaries/champion/2026/11/30/10/15-25-abc.jsonl",
              "\n".join(json.dumps(line) for line in SAGEMAKER_LINES).encode())
    records, _ = read_capture(store, "summaries", now=datetime(2026, 11, 30, 11, tzinfo=UTC))
    assert [(r.event_id, r.inputs, r.outputs, r.at.second) for r in records] == [
        ("a1", ["Ana: hi."], ["Ana greets."], 25), ("a2", ["Ben: bye."], ["Ben leaves."], 26)]
    assert records[1].inference_id == "t-7"


def test_the_capture_reader_reads_a_folder(tmp_path: Path) -> None:
    check_reader(LocalStore(tmp_path / "capture"))


def test_the_capture_reader_reads_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="capture")
        check_reader(S3Store("capture", client, prefix="data-capture"))


HOSTILE_BODIES = [
    b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested past any parser's depth
    b"\xff\xfe not utf-8 \x80",
    b'{"inputs": "\\ud800 a lone surrogate"}',
    b"[" * 50_000,
    b'{"inputs": {"nested": {"dict": [1, 2, 3]}}}',
    b'{"inputs": 12345678901234567890123456789}',
    b"null",
    b'"just a string"',
]


def test_a_reader_skips_and_counts_the_records_it_cannot_read(tmp_path: Path) -> None:
    """Capture of refused hostile requests, a foreign line and a record nested past the parser's depth: each is
    skipped or read as a record without text, counted, and the readable records around them are read."""
    store = LocalStore(tmp_path / "capture")
    when = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    lines = [json.dumps(capture_record(body, b'{"message": "bad request"}', content_type="application/json",
                                       accept="application/json", inference_id=None, when=when, error=True,
                                       event_id=f"h{i}"))
             for i, body in enumerate(HOSTILE_BODIES)]
    lines.insert(3, "not json at all")
    lines.insert(5, '{"captureData": ' * 5000 + "1" + "}" * 5000)  # a whole record nested too deep
    good = capture_record(b'{"inputs": "Ana: hi."}', b'[{"generated_text": "Ana greets."}]',
                          content_type="application/json", accept="application/json", inference_id=None,
                          when=when, event_id="good")
    store.put("summaries/champion/2026/11/30/10/00-00-x.jsonl",
              ("\n".join([json.dumps(good), *lines, json.dumps(good | {"eventMetadata": {
                  **good["eventMetadata"], "eventId": "good2"}})]) + "\n").encode())
    records, cursor = read_capture(store, "summaries", now=when + timedelta(hours=1))
    assert [r.event_id for r in records if not r.error] == ["good", "good2"]
    assert cursor.skipped >= 3  # the deep body, the foreign line and the record nested too deep
    assert len(records) + cursor.skipped == len(lines) + 2  # every line is a record or counted
    again, after = read_capture(store, "summaries", cursor, now=when + timedelta(hours=1))
    assert again == [] and after.skipped == cursor.skipped  # counted once
