"""What a SageMaker container finds in /opt/ml/model: a model's `ModelDataUrl` unpacked, cached by the archive's
digest. `file://` archives and folders are read in place; `s3://` archives (and uncompressed prefixes, as
JumpStart keeps its models) are fetched once per content with the default AWS credentials, as the execution role
would fetch them."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_aws.sagemaker_api import validation


def local_path(url: str) -> Path:
    """The path of a file:// URI (percent-decoded, as `Path.as_uri` encodes it)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    return Path(url2pathname(urlparse(url).path))


def container(model: dict[str, Any]) -> dict[str, Any]:
    """The one container of a model record."""
    return dict(model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0])


def model_data_url(definition: dict[str, Any]) -> str | None:
    if "ModelDataUrl" in definition:
        return str(definition["ModelDataUrl"])
    source = (definition.get("ModelDataSource") or {}).get("S3DataSource") or {}
    return str(source["S3Uri"]) if "S3Uri" in source else None


class ModelData:
    """Unpacked packages under `<root>/model-data/`, downloads under `<root>/downloads/`."""

    def __init__(self, root: Path, region: str) -> None:
        self.root, self.region = root, region
        self.cache = root / "model-data"

    def unpacked(self, url: str) -> Path:
        """The folder a model's container serves (refused with SageMaker's words when it cannot be read)."""
        if url.startswith("s3://"):
            source = self._download(url)
        elif url.startswith("file://"):
            source = local_path(url)
        else:
            raise validation(f"Could not access model data at {url}: the local control plane reads s3:// and file:// "
                             "URIs.")
        if source.is_dir():
            return source
        if not source.is_file():
            raise validation(f"Could not access model data at {url}. No such file.")
        digest = hashlib.sha256()
        with source.open("rb") as data:
            for chunk in iter(lambda: data.read(1 << 20), b""):
                digest.update(chunk)
        target = self.cache / digest.hexdigest()[:32]
        if target.exists():
            return target
        partial = target.with_name(target.name + f".{os.getpid()}.{threading.get_ident()}.partial")
        try:
            with tarfile.open(source, "r:*") as archive:
                archive.extractall(partial, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise validation(f"Could not access model data at {url}: not a readable model.tar.gz ({exc}).") from None
        _settle(partial, target)
        return target

    def release(self, folder: str, in_use: Callable[[str], bool]) -> None:
        """Remove an unpacked package once nothing uses it (a folder read in place is never removed)."""
        if folder and Path(folder).parent == self.cache and not in_use(folder):
            shutil.rmtree(folder, ignore_errors=True)

    def _download(self, url: str) -> Path:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = url.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", region_name=self.region)
        partial: Path | None = None
        try:
            if url.endswith("/"):
                objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                           for o in page.get("Contents", []) if not o["Key"].endswith("/")]
                if not objects:
                    raise validation(f"Could not access model data at {url}: the prefix holds no objects.")
                version = "|".join(f"{o['Key']}={o['ETag']}" for o in objects)
            else:
                objects, version = [], s3.head_object(Bucket=bucket, Key=key)["ETag"]
            folder = self.root / "downloads" / hashlib.sha256(f"{url}|{version}".encode()).hexdigest()[:32]
            target = folder if objects else folder / Path(key).name
            if target.exists():
                return target
            partial = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.partial")
            for item in objects or [{"Key": key}]:
                destination = partial / (item["Key"][len(key):] if objects else Path(key).name)
                destination.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(destination))
        except (ClientError, BotoCoreError) as exc:
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)
            raise validation(f"Could not access model data at {url}: {exc}") from None
        _settle(partial, folder)
        return target


def _settle(partial: Path, target: Path) -> None:
    """Move a finished download or unpacking into place; another request may have done it meanwhile."""
    try:
        partial.rename(target)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
