"""`finetuning eval`'s evaluations of a loaded checkpoint: the run's own, outside training.

The validation loss (``eval_loss``, ``eval_<source>_loss``) with the collator and loss the run's
trainer uses, the generation evals and the lm-eval tasks; the numbers for a checkpoint are the
ones the run logged at that step (greedy decoding). See docs/evaluating.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetuning.train.reporting.evaluation import (
    run_generation_eval,
    source_losses,
    write_records,
)
from finetuning.train.reporting.harness import run_lm_eval


def _loss_trainer(plan: Any, model: Any, folder: Path) -> Any:
    """A Trainer that only evaluates, batching and computing the loss as the run's trainer did."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from finetuning.data.collate import PaddedCollator, PaddingFreeCollator
    from finetuning.model import attention
    from finetuning.model.packing import keeps_examples_apart
    from finetuning.train.loss import chunked_causal_lm_loss, keeps_trained_logits

    config, setup = plan.config, plan.setup
    padding_free = config.sft_args.padding_free
    if padding_free:
        attention.choose(model, config.run_conf.model_args.attn_implementation)
        if not keeps_examples_apart(model, PaddingFreeCollator()):
            padding_free = False
            attention.restore_sdpa(model)
    keep = keeps_trained_logits(model)
    if padding_free:
        collator: Any = PaddingFreeCollator(keep_trained_logits=keep)
    else:
        eos = setup.tokenizer.eos_token_id if setup.convert_pad_to_eos else None
        collator = PaddedCollator(
            setup.tokenizer.pad_token_id, config.data_conf.padding_side, eos, keep
        )
    args = TrainingArguments(
        output_dir=str(folder),
        per_device_eval_batch_size=plan.resolved.per_device_eval,
        report_to="none",
        use_cpu=bool(config.training_args.get("use_cpu")),
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, data_collator=collator, compute_loss_func=chunked_causal_lm_loss
    )
    trainer.remove_callback(PrinterCallback)  # the table is printed once, at the end
    return trainer


def evaluate_model(plan: Any, model: Any, folder: Path) -> dict[str, Any]:
    """Run the config's evaluations on a loaded model (`finetuning eval`).

    The validation loss (``eval_loss`` and ``eval_<source>_loss``), every generation eval
    (completions to ``folder/evals/<name>.jsonl``) and the lm-eval tasks.

    Returns:
        ``{"metrics": {...}, "rows": {...}}``.
    """
    from finetuning.data.collate import SFTDataset

    data, metrics, rows = plan.data, {}, {}
    if data.valid is not None and len(data.valid):
        trainer = _loss_trainer(plan, model, folder)
        metrics.update(
            {k: v for k, v in trainer.evaluate(SFTDataset(data.valid)).items() if k == "eval_loss"}
        )
        parts = {k: SFTDataset(v) for k, v in data.valid_parts.items()}
        metrics.update(source_losses(trainer, parts))
        rows["validation"] = len(data.valid)
        rows.update({f"validation/{k}": len(v) for k, v in data.valid_parts.items()})
    tokenizer = plan.setup.tokenizer
    for geval in plan.evals:
        means, records = run_generation_eval(geval, model, tokenizer, plan.settings)
        metrics.update(means)
        rows[f"generation/{geval.name}"] = len(records)
        write_records(folder / "evals" / f"{geval.name}.jsonl", records)
    lm_config = plan.config.eval_conf.lm_eval
    if lm_config is not None:
        metrics.update(run_lm_eval(model, tokenizer, lm_config))
    return {"metrics": metrics, "rows": rows}
