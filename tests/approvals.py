"""Helpers shared by the approval tests: clients per user and versions registered as the pipeline does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from model_registry import tags as T
from model_registry.approval import ApprovalConfig

CONFIG = ApprovalConfig()


def as_user(server: dict[str, Any], user: str) -> MlflowClient:
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, server["passwords"][user]
    return MlflowClient(tracking_uri=server["url"], registry_uri=server["url"])


def register(server: dict[str, Any], model: str, *, gate: str = "passed", triggered_by: str = "ml-engineer",
             source: str | None = None) -> str:
    """A version registered the way the pipeline registers one, as the pipeline account."""
    client = as_user(server, CONFIG.pipeline_account)
    if client.get_experiment_by_name("approvals") is None:
        client.create_experiment("approvals")
    run = client.create_run(client.get_experiment_by_name("approvals").experiment_id, tags={T.RUN_KEY: "key-1"})
    if not client.search_registered_models(f"name = '{model}'"):
        client.create_registered_model(model)
    tags = {T.APPROVAL_STATUS: T.PENDING if gate == "passed" else T.REJECTED, T.GATE: gate,
            T.GATE_SUMMARY: f"gates {gate}", T.DATASET_HASH: "d" * 64, T.BASE_MODEL: "builtin:tiny",
            T.SOURCE_RUN: run.info.run_id, T.RUN_KEY: "key-1", T.TRIGGERED_BY: triggered_by}
    return str(client.create_model_version(model, source=source or f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                           tags=tags, description=f"**Gates {gate}.** Read the gate report first.").version)


def cli(server: dict[str, Any], user: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`genaiops ARGS` as `user`, against the server."""
    full = {**os.environ, "GENAIOPS_WORKSPACE": str(server["workspace"]), "GENAIOPS_MLFLOW_TRACKING_URI": server["url"],
            "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": server["passwords"][user], "COLUMNS": "200",
            **(env or {})}
    return subprocess.run([str(Path(sys.executable).parent / "genaiops"), *args], env=full, capture_output=True,
                          text=True, timeout=300, check=False)
