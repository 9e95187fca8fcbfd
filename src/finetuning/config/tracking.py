"""MLflow tracking configuration."""

from __future__ import annotations

from typing import Literal

from finetuning.config.strict import StrictModel


class FinetuningTrackingConfig(StrictModel):
    """Settings that define how run details are logged to MLflow."""

    mlflow_server_uri: str
    """MLflow server URI (http://...), a file:// URI or a local path."""
    experiment_name: str
    """Experiment name that is used for MLflow tracking."""
    run_id: str | None = None
    """Run id, to resume logging to a previously started run."""
    run_name: str | None = None
    """Run name shown in the MLflow UI; used only when run_id is unspecified."""
    hf_mlflow_log_artifacts: Literal["True", "False"] = "False"
    """Whether to store model checkpoints as MLflow artifacts ("True" or "False")."""
