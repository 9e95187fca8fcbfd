"""The SFT recipe: resolve → data → tokenizer → model → adapter → trainer → train → save."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import yaml

from finetuning.config.loading import LoadedConfig, resolved_dict
from finetuning.data.collate import PaddedCollator, PaddingFreeCollator, SFTDataset
from finetuning.data.preflight import build_report, encode_settings
from finetuning.data.prepare import prepare_data
from finetuning.errors import UserError
from finetuning.model.hardware import hardware_problems
from finetuning.model.loading import apply_adapter, load_model, resize_for_tokenizer
from finetuning.model.tokenizer import load_tokenizer, save_for_inference, setup_tokenizer
from finetuning.train import arguments
from finetuning.train.batch import resolve
from finetuning.train.callbacks import InferenceTokenizerCallback, ThroughputCallback
from finetuning.train.checkpoints import resolve_resume
from finetuning.train.summary import RunSummary, check_writable, summarize

logger = logging.getLogger(__name__)

DEFAULT_LEARNING_RATE = 5e-5


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Fine-tune the model of ``loaded.config`` with supervised fine-tuning.

    Returns:
        What the run did (steps, tokens, losses, where the outputs are).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from accelerate import PartialState
    from transformers import Trainer, TrainingArguments

    started = time.perf_counter()
    config = loaded.config
    state = PartialState()

    # Resolve: batch sizes, learning rate, outputs, hardware, resume.
    resolved = resolve(config, arguments.world_size(), DEFAULT_LEARNING_RATE)
    arguments.log_resolved(config, resolved, loaded.notes if state.is_main_process else [])
    problems = hardware_problems(config)
    if problems:
        raise UserError(problems[0] + " (this machine cannot run the config as written)")
    output_dir, logging_dir = arguments.output_dirs(config)
    check_writable(output_dir)
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(logging_dir))
    resume = resolve_resume(config.run_conf.resume_from_checkpoint, output_dir)
    arguments.set_determinism(config)

    # Tokenizer and data: prepared once on the main process, reused from the cache elsewhere.
    setup = setup_tokenizer(config, load_tokenizer(config))
    tokenizer = setup.tokenizer
    with state.main_process_first():
        data = prepare_data(
            config.data_conf,
            tokenizer,
            encode_settings(config),
            "sft",
            num_workers=getattr(cli_args, "num_preprocess_workers", None),
        )
    report = build_report(config, setup, data)
    if state.is_main_process:
        logger.info("%s", report.format())
    if report.fatal:
        raise UserError(report.fatal)

    # Model and adapter.
    distributed = arguments.distributed_kind(config)
    model = load_model(config, distributed)
    resized = resize_for_tokenizer(model, tokenizer)
    if resized and config.peft_conf.peft_type != "NO_PEFT" and state.is_main_process:
        base_dir = output_dir / config.sft_args.save_name_if_new_basemodel
        model.save_pretrained(base_dir)
        save_for_inference(tokenizer, config.data_conf.chat_template_name, base_dir)
        logger.info("saved the resized base model to %s (needed to merge the adapter)", base_dir)
    model = apply_adapter(config, model, resized)

    # Trainer.
    tracking = None
    if cli_args is not None or config.tracking is not None:
        from finetuning.tracking import setup_tracking

        tracking = setup_tracking(config, cli_args)
    kwargs = arguments.trainer_kwargs(config, resolved, output_dir, tracking is not None)
    if tracking is not None and tracking.run_name:
        kwargs.setdefault("run_name", tracking.run_name)
    padding_free = config.sft_args.padding_free
    if padding_free:
        collator: Any = PaddingFreeCollator()
        kwargs["include_num_input_tokens_seen"] = "all"  # a packed row has no padding
    else:
        eos = tokenizer.eos_token_id if setup.convert_pad_to_eos else None
        collator = PaddedCollator(tokenizer.pad_token_id, config.data_conf.padding_side, eos)
    training_args = arguments.build_training_arguments(TrainingArguments, kwargs)
    throughput = ThroughputCallback()
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=SFTDataset(data.train),
        eval_dataset=SFTDataset(data.valid) if data.valid is not None else None,
        data_collator=collator,
        callbacks=[
            throughput,
            InferenceTokenizerCallback(tokenizer, config.data_conf.chat_template_name),
        ],
    )
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        with (output_dir / "resolved_config.yaml").open("w") as f:
            yaml.safe_dump(resolved_dict(config), f, sort_keys=False)

    # Train, then save the final model (the adapter for PEFT) with an inference-ready tokenizer.
    result = trainer.train(resume_from_checkpoint=resume)
    final_dir = output_dir / config.run_conf.final_checkpoint_name
    trainer.save_model(str(final_dir))
    if trainer.is_world_process_zero():
        save_for_inference(tokenizer, config.data_conf.chat_template_name, final_dir)
    summary = summarize(trainer, result, throughput, final_dir, time.perf_counter() - started)
    if state.is_main_process:
        summary.write(output_dir / "run_summary.json")
        logger.info("%s", summary.format())
    return summary
