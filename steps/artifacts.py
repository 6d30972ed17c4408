"""The artifact store port: a folder in the workspace locally, S3 (SSE-KMS) on AWS."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Protocol


class ArtifactNotFoundError(KeyError):
    """No artifact is stored under the key."""


class ArtifactStore(Protocol):
    """Keys are relative POSIX paths such as `datasets/<hash>/train.jsonl`."""

    def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key`; return the artifact's URI."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes under `key`, or raise ArtifactNotFoundError."""
        ...

    def exists(self, key: str) -> bool: ...

    def uri(self, key: str) -> str: ...

    def read_uri(self, uri: str) -> bytes:
        """Read any object this store's backend can reach by URI (a data source, say)."""
        ...

    def put_new(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` only if nothing is there yet; False if it already existed."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted."""
        ...


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"artifact key must be a relative path without '..', got {key!r}")
    return str(path)


class LocalStore:
    """Artifacts as files under a root folder; writes are atomic (temp file, then rename)."""

    whole_objects = False  # a file may grow (an endpoint appends its capture)

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFoundError(f"no artifact {key!r} under {self.root}")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def put_new(self, key: str, data: bytes) -> bool:
        """Written whole to a temp file, then linked into place: the link fails if the key exists, and a process
        killed mid-write leaves only a hidden temp file, never a half-written entry under the key."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return False
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def list_keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))

    def read_uri(self, uri: str) -> bytes:
        if not uri.startswith("file://"):
            raise ArtifactNotFoundError(f"{uri}: the local backend reads local files only; s3:// needs the aws backend")
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise ArtifactNotFoundError(f"{uri}: no such file")
        return path.read_bytes()


class S3Store:
    """Artifacts as S3 objects under a prefix, encrypted with a KMS key when one is given."""

    whole_objects = True  # an object is written whole, never appended to: one read once is read

    def __init__(self, bucket: str, client: Any, *, prefix: str = "", kms_key_id: str | None = None) -> None:
        self.bucket = bucket
        self.client = client
        self.prefix = prefix.strip("/")
        self.kms_key_id = kms_key_id

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> str:
        extra: dict[str, str] = {"ServerSideEncryption": "aws:kms"}
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise ArtifactNotFoundError(f"no artifact {key!r} in {self.uri(key)}") from exc
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put_new(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        extra: dict[str, str] = {"ServerSideEncryption": "aws:kms"}
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        try:  # a conditional write: S3 refuses it if the key exists
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*", **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys += [item["Key"].removeprefix(base) for item in page.get("Contents", [])]
        return sorted(keys)

    def read_uri(self, uri: str) -> bytes:
        if not uri.startswith("s3://") or "/" not in uri.removeprefix("s3://"):
            raise ArtifactNotFoundError(f"{uri}: not an s3://bucket/key URI")
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        try:
            body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise ArtifactNotFoundError(f"{uri}: no such object") from exc
        except self.client.exceptions.NoSuchBucket as exc:
            raise ArtifactNotFoundError(f"{uri}: no such bucket") from exc
        return body
