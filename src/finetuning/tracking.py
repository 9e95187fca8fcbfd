"""MLflow tracking: which server (by precedence) and the environment the trainer's MLflow hook reads.

Precedence: the CLI's ``--mlflow-server-uri`` (with ``--experiment-name``, default "default") >
the config's ``tracking`` section > ``MLFLOW_TRACKING_URI`` already in the environment > off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuning.config.experiment import ExperimentConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracking:
    """The resolved tracking settings of a run."""

    uri: str
    experiment_name: str
    run_id: str | None
    run_name: str | None
    log_artifacts: bool


def normalise_uri(uri: str) -> str:
    """A local path becomes a ``file://`` URI; other URIs are kept."""
    if "://" in uri or uri.startswith(("sqlite:", "databricks")):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def resolve_tracking(config: ExperimentConfig, cli_args: Any = None) -> Tracking | None:
    """Apply the precedence; None means tracking is off."""
    cli_uri = getattr(cli_args, "mlflow_server_uri", None)
    cli_artifacts = getattr(cli_args, "hf_mlflow_log_artifacts", None)
    section = config.tracking
    if cli_uri:
        uri, experiment = cli_uri, getattr(cli_args, "experiment_name", None) or "default"
        run_id = section.run_id if section else None
        run_name = section.run_name if section else None
        artifacts = section.hf_mlflow_log_artifacts if section else "False"
    elif section is not None:
        uri, experiment = section.mlflow_server_uri, section.experiment_name
        run_id, run_name, artifacts = (
            section.run_id,
            section.run_name,
            section.hf_mlflow_log_artifacts,
        )
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri = os.environ["MLFLOW_TRACKING_URI"]
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "default")
        run_id, run_name, artifacts = os.environ.get("MLFLOW_RUN_ID"), None, "False"
    else:
        return None
    if cli_artifacts is not None:
        artifacts = cli_artifacts
    return Tracking(normalise_uri(uri), experiment, run_id, run_name, artifacts == "True")


def setup_tracking(config: ExperimentConfig, cli_args: Any = None) -> Tracking | None:
    """Resolve tracking and set the environment transformers' MLflow callback reads."""
    tracking = resolve_tracking(config, cli_args)
    if tracking is None:
        return None
    os.environ["MLFLOW_TRACKING_URI"] = tracking.uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = tracking.experiment_name
    os.environ["MLFLOW_FLATTEN_PARAMS"] = "TRUE"
    os.environ["HF_MLFLOW_LOG_ARTIFACTS"] = "TRUE" if tracking.log_artifacts else "FALSE"
    if tracking.uri.startswith("file:"):
        # mlflow 3 refuses the file store unless asked; the reference promises local paths work.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if tracking.run_id:
        os.environ["MLFLOW_RUN_ID"] = tracking.run_id
    logger.info("MLflow tracking to %s (experiment %r)", tracking.uri, tracking.experiment_name)
    return tracking
