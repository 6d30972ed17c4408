"""The S3 artifact store against moto: round trip, KMS encryption, missing keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from steps.artifacts import ArtifactNotFoundError, S3Store


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


def test_objects_are_written_encrypted_with_the_given_key(aws: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    key_id = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    store = S3Store("artifacts", s3, prefix="genaiops", kms_key_id=key_id)

    uri = store.put("datasets/abc/train.jsonl", b'{"a": 1}\n')
    assert uri == "s3://artifacts/genaiops/datasets/abc/train.jsonl"
    head = s3.head_object(Bucket="artifacts", Key="genaiops/datasets/abc/train.jsonl")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id
    assert store.get("datasets/abc/train.jsonl") == b'{"a": 1}\n'
    assert store.exists("datasets/abc/train.jsonl")
    assert not store.exists("datasets/abc/test.jsonl")


def test_missing_object_raises_artifact_not_found(aws: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    with pytest.raises(ArtifactNotFoundError, match="s3://artifacts/x/nope"):
        S3Store("artifacts", s3, prefix="x").get("nope")


def test_keys_cannot_escape_the_prefix(aws: None) -> None:
    store = S3Store("artifacts", boto3.client("s3", region_name="us-east-1"), prefix="genaiops")
    with pytest.raises(ValueError, match="relative path"):
        store.put("../other/thing", b"x")


def test_an_s3_source_is_prepared_through_the_store(aws: None, sample_jsonl: Path) -> None:
    from steps.data import DataConfig, prepare_dataset
    from steps.data_sources import DataSourceError

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="raw")
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(Bucket="raw", Key="dialogues/v1.jsonl", Body=sample_jsonl.read_bytes())
    store = S3Store("artifacts", s3, prefix="genaiops")
    config = DataConfig(source="s3://raw/dialogues/v1.jsonl")

    dataset = prepare_dataset(config, store, lambda texts: [len(t.split()) for t in texts])
    assert dataset.source == "s3://raw/dialogues/v1.jsonl" and sum(dataset.counts.values()) == 120
    assert store.exists(f"datasets/{dataset.hash}/train.jsonl")
    assert prepare_dataset(config, store, lambda texts: [len(t.split()) for t in texts]).reused

    with pytest.raises(DataSourceError, match=r"s3://raw/missing\.jsonl: no such object"):
        prepare_dataset(DataConfig(source="s3://raw/missing.jsonl"), store, lambda texts: [0] * len(texts))
