"""Keep every run offline and quiet: no hub downloads, no telemetry.

Called once at CLI start-up and by the flows before any library that phones home is imported.
Values a user already set are left alone, except the telemetry switches, which are forced off.
"""

from __future__ import annotations

import logging
import os

OUR_LOGGERS = ("steps", "model_registry", "serving", "monitoring", "pipelines")

# Telemetry and update checks of Prefect, MLflow, Great Expectations, Hugging Face and CDK.
FORCED = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "CDK_DISABLE_VERSION_CHECK": "1",
}
DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Progress is reported as log lines (step, loss, ETA); library progress bars only add noise.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PREFECT_LOGGING_EXTRA_LOGGERS": ",".join(OUR_LOGGERS),
    # Our loggers also run outside flow runs (the CLI, the model server): no warning for that.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # jsii (CDK) prints a banner on Node 20, which is what this machine has.
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    # A temporary Prefect server can start slowly on a busy two-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # An MLflow server starts a job runner (huey consumers, a periodic-task scheduler) for its GenAI jobs, which
    # genaiops neither uses nor allows (the approval server refuses their routes): it only takes CPU.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # The MLflow git probe shells out for every run; nothing here needs it.
    "GIT_PYTHON_REFRESH": "quiet",
}


def go_offline() -> None:
    """Set the environment so that no library reaches outside the machine on its own."""
    os.environ.update(FORCED)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_warnings()
    for name in OUR_LOGGERS:  # progress (steps, loss, ETA) is INFO; the root logger drops INFO
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def quiet_warnings() -> None:
    """Silence library deprecation chatter that says nothing to a user of this tool."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*Type hint used in the model's predict function.*")
