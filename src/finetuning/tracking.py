"""MLflow tracking: which server (by precedence), the run, and what is logged to it.

Precedence: the CLI's ``--mlflow-server-uri`` (with ``--experiment-name``; without one, MLflow's own
"Default" experiment, so no second "default" appears beside it) >
the config's ``tracking`` section > ``MLFLOW_TRACKING_URI`` already in the environment > off.

When on, "mlflow" joins ``report_to`` so transformers' MLflow callback opens the run (on the main
process only) and logs the training arguments and every logged metric (loss, eval loss, learning
rate, grad norm, tokens/s, DPO rewards). ``MlflowExtras`` (a trainer callback, in
``train/reporting/callbacks``) adds what is ours: the flattened
config, the resolved batch sizes and learning rate, tags, the resolved config and the data
preflight report as artifacts, and the run report at the end. The run id is kept in
``output_dir/mlflow_run.json`` so a resumed run keeps logging into the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuning.config.experiment import ExperimentConfig

logger = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"


@dataclass(frozen=True)
class Tracking:
    """The resolved tracking settings of a run."""

    uri: str
    experiment_name: str | None
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
    run_id = section.run_id if section else None
    run_name = section.run_name if section else None
    artifacts = section.hf_mlflow_log_artifacts if section else "False"
    if cli_uri:
        uri, experiment = cli_uri, getattr(cli_args, "experiment_name", None)
    elif section is not None:
        uri, experiment = section.mlflow_server_uri, section.experiment_name
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri = os.environ["MLFLOW_TRACKING_URI"]
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or None
        run_id = run_id or os.environ.get("MLFLOW_RUN_ID")
    else:
        return None
    if cli_artifacts is not None:
        artifacts = cli_artifacts
    return Tracking(normalise_uri(uri), experiment, run_id, run_name, artifacts == "True")


def default_run_name(config: ExperimentConfig) -> str:
    """A readable run name: method, model folder name and start time."""
    model = Path(config.run_conf.model.rstrip("/")).name or "model"
    return f"{config.method}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def plan_tracking(
    config: ExperimentConfig, cli_args: Any = None, output_dir: Path | None = None
) -> Tracking | None:
    """Resolve tracking, with the run id and run name it will use; changes nothing.

    A run resumed in ``output_dir`` continues the MLflow run recorded there, unless the config
    names another ``run_id``.
    """
    tracking = resolve_tracking(config, cli_args)
    if tracking is None:
        return None
    run_id = tracking.run_id
    stored = output_dir / RUN_FILE if output_dir else None
    if run_id is None and stored is not None and stored.is_file():
        run_id = json.loads(stored.read_text())["run_id"]
        logger.info("continuing MLflow run %s (from %s)", run_id, stored)
    return Tracking(
        tracking.uri,
        tracking.experiment_name,
        run_id,
        tracking.run_name or default_run_name(config),
        tracking.log_artifacts,
    )


def export_tracking(tracking: Tracking) -> None:
    """Set the environment transformers' MLflow callback reads (a run does this, validate not)."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking.uri
    if tracking.experiment_name:
        os.environ["MLFLOW_EXPERIMENT_NAME"] = tracking.experiment_name
    else:  # transformers' callback then logs into MLflow's "Default" experiment
        os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    os.environ["MLFLOW_FLATTEN_PARAMS"] = "TRUE"
    os.environ["HF_MLFLOW_LOG_ARTIFACTS"] = "TRUE" if tracking.log_artifacts else "FALSE"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if tracking.uri.startswith("file:"):
        # mlflow 3 refuses the file store unless asked; the reference promises local paths work.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    if tracking.run_id:
        os.environ["MLFLOW_RUN_ID"] = tracking.run_id
    else:
        os.environ.pop("MLFLOW_RUN_ID", None)
    logger.info(
        "MLflow tracking to %s (experiment %r)", tracking.uri, tracking.experiment_name or "Default"
    )


def open_command(uri: str) -> str:
    """How to look at the runs of ``uri``: the ``mlflow ui`` command for a local store, else the URL.

    MLflow 3 keeps the file store (a local folder) in maintenance mode and refuses to open it
    unless ``MLFLOW_ALLOW_FILE_STORE=true``; it recommends a SQLite store
    (``sqlite:///path/mlflow.db``), which ``--mlflow-server-uri`` / ``mlflow_server_uri`` accept.
    """
    if uri.startswith("file:"):
        return f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri}"
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser"


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested config data into ``a.b.c`` -> string value params."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(data) if isinstance(data, list) else str(data)}


def mixture_params(table: list[dict[str, Any]]) -> dict[str, str]:
    """The weighted mix's table as MLflow params: ``mixture.<source>.<field>``.

    Per source: the weight, rows and tokens requested and realized, the repeated rows and the
    requested and realized share (see ``finetuning.data.sources.mixture_table``).
    """
    return {
        f"mixture.{row['source']}.{key}": str(value)
        for row in table
        for key, value in row.items()
        if key != "source"
    }


def log_final_artifacts(run_id: str | None, files: list[Path]) -> None:
    """Log files (the run report) into the finished run ``run_id``."""
    if run_id is None:
        return
    import mlflow

    with mlflow.start_run(run_id=run_id):
        for path in files:
            if path.is_file():
                mlflow.log_artifact(str(path))


def log_eval_results(tracking: Tracking, results: dict[str, Any], path: Path) -> str:
    """Log `finetuning eval`'s results as a new MLflow run in the config's experiment.

    The run is named ``eval <checkpoint folder>`` (``eval base`` for the base model), with the
    checkpoint and config hash as params, the metrics, and ``eval_results.json`` as an
    artifact. Returns the run id.
    """
    import mlflow

    if tracking.uri.startswith("file:"):
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri(tracking.uri)
    if tracking.experiment_name:
        mlflow.set_experiment(tracking.experiment_name)
    checkpoint = results.get("checkpoint")
    name = f"eval {Path(checkpoint).name if checkpoint else 'base'}"
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({"finetuning.command": "eval"})
        mlflow.log_params(
            {"checkpoint": str(checkpoint), "config_hash": str(results.get("config_hash"))}
        )
        numbers = {
            k: float(v)
            for k, v in results["metrics"].items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        mlflow.log_metrics({k: v for k, v in numbers.items() if v == v})  # NaN: not logged
        mlflow.log_artifact(str(path))
        return run.info.run_id
