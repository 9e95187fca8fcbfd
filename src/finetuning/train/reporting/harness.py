"""EleutherAI's lm-evaluation-harness on a loaded model (``eval_conf.lm_eval``).

lm-eval is an optional extra (``pip install 'finetuning[lm-eval]'``); it is imported here only.
Tasks of your own are YAML files in ``include_path`` with local data, so they run offline.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from finetuning.errors import UserError

#: What to install for ``eval_conf.lm_eval`` (the plan says it before the run; the run after).
LM_EVAL_INSTALL = (
    "eval_conf.lm_eval needs the lm-eval package: pip install 'finetuning[lm-eval]' "
    "(or pip install 'lm-eval==0.4.*')"
)


def run_lm_eval(model: Any, tokenizer: Any, lm_config: Any) -> dict[str, Any]:
    """Run lm-eval's tasks on ``model``; returns ``{"lm_eval/<task>/<metric>": value}``.

    Raises:
        UserError: lm-eval is not installed, or a task is unknown.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError(LM_EVAL_INSTALL) from None
    include = lm_config.include_path
    manager = TaskManager(include_path=str(Path(include).resolve()) if include else None)
    unknown = [t for t in lm_config.tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"eval_conf.lm_eval.tasks: lm-eval knows no task {', '.join(map(repr, unknown))}"
            + ("" if include else " (give your own tasks' folder as include_path)")
        )
    was_training = model.training
    model.eval()
    try:
        # An adapter's model: the transformers model inside it, its adapter layers active.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        lm = HFLM(pretrained=base, tokenizer=tokenizer, batch_size=lm_config.batch_size)
        limit = lm_config.limit
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(lm_config.tasks),
            num_fewshot=lm_config.num_fewshot,
            limit=int(limit) if limit is not None and limit >= 1 else limit,
            task_manager=manager,
            log_samples=False,
        )
    finally:
        model.train(was_training)
    out: dict[str, Any] = {}
    for task, metrics in (results or {}).get("results", {}).items():
        for key, value in metrics.items():
            if key in ("alias", "sample_len") or not isinstance(value, int | float):
                continue
            metric = key.replace(",none", "").replace(",", "_")
            if isinstance(value, float) and math.isnan(value):
                continue
            out[f"lm_eval/{task}/{metric}"] = value
    return out
