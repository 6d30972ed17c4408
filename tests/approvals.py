"""Helpers shared by the approval tests: clients per user and versions registered as the pipeline does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from contracts import tags as T
from model_registry.approval import ApprovalConfig

CONFIG = ApprovalConfig()

# People as the approval stack's Cognito user pool knows them (the claims its load balancer signs), and the rules
# as an AWS deployment writes them: approvers by their sign-in claim, only service accounts with passwords.
PEOPLE = {name: {"sub": f"7f4c0a8e-0000-4000-8000-00000000000{i}", "email": f"{name}@example.com",
                 "email_verified": "true", "username": name} for i, name in enumerate(("alice", "bob"), 1)}
ALB_CONFIG = ApprovalConfig(approvers=[PEOPLE["alice"]["email"]], sign_in="load-balancer", demo=False,
                            users=[CONFIG.pipeline_account, CONFIG.watcher_account, CONFIG.release_account],
                            feedback_accounts=[PEOPLE["bob"]["email"]])  # a reviewer who corrects answers


def name(server: dict[str, Any], user: str) -> str:
    """Who the server knows `user` as: the email claim of a person signed in by the load balancer, else the name."""
    people = server.get("people") or {}
    return str(people[user]["email"]) if user in people else user


def as_user(server: dict[str, Any], user: str) -> MlflowClient:
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, server["passwords"][user]
    return MlflowClient(tracking_uri=server["url"], registry_uri=server["url"])


def register(server: dict[str, Any], model: str, *, gate: str = "passed", triggered_by: str = "ml-engineer",
             source: str | None = None, claim: dict[str, str] | None = None, as_account: str | None = None,
             package: dict[str, str] | None = None) -> str:
    """A version registered the way the pipeline registers one, as the pipeline account: a run that logs the
    dataset hash, the base model and the gate report, then the version with the tags that run shows
    (`claim` overrides some of them, to claim what the run does not show; `as_account` registers it instead)."""
    from model_registry.evidence import BASE_MODEL_PARAM, DATASET_HASH_PARAM, REPORT_FOLDER, REPORT_JSON
    from steps.evaluate import GateReport

    client = as_user(server, CONFIG.pipeline_account)
    if client.get_experiment_by_name("approvals") is None:
        client.create_experiment("approvals")
    run = client.create_run(client.get_experiment_by_name("approvals").experiment_id,
                            tags={T.RUN_KEY: "key-1", T.TRIGGERED_BY: triggered_by})
    dataset = "d" * 64
    client.log_param(run.info.run_id, DATASET_HASH_PARAM, dataset)
    client.log_param(run.info.run_id, BASE_MODEL_PARAM, "builtin:tiny")
    report = GateReport(passed=gate == "passed", checks=[])
    client.log_text(run.info.run_id, report.to_json(dataset), f"{REPORT_FOLDER}/{REPORT_JSON}")
    for key, value in (package or {}).items():  # uri, digest, image: logged as the retrain flow logs them
        client.log_param(run.info.run_id, f"package.{key}", value)
    if not client.search_registered_models(f"name = '{model}'"):
        client.create_registered_model(model)
    tags = {T.APPROVAL_STATUS: T.PENDING if gate == "passed" else T.REJECTED, T.GATE: gate,
            T.GATE_SUMMARY: report.summary(), T.DATASET_HASH: dataset, T.BASE_MODEL: "builtin:tiny",
            T.SOURCE_RUN: run.info.run_id, T.RUN_KEY: "key-1", T.TRIGGERED_BY: triggered_by,
            **{f"genaiops.package_{k}": v for k, v in (package or {}).items()}, **(claim or {})}
    if as_account is not None:
        client = as_user(server, as_account)
    return str(client.create_model_version(model, source=source or f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                           tags=tags, description=f"**Gates {gate}.** Read the gate report first.").version)


def cli(server: dict[str, Any], user: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`genaiops ARGS` as `user`, against the server."""
    full = {**os.environ, "GENAIOPS_WORKSPACE": str(server["workspace"]), "GENAIOPS_MLFLOW_TRACKING_URI": server["url"],
            "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": server["passwords"].get(user, ""),
            "COLUMNS": "200",
            **(env or {})}
    return subprocess.run([str(Path(sys.executable).parent / "genaiops"), *args], env=full, capture_output=True,
                          text=True, timeout=300, check=False)
