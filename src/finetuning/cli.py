"""The `finetuning` command: argument parsing and dispatch only.

Exit codes: 0 success, 2 user error (one clear message, no traceback), 1 anything else.
Heavy libraries are imported by the subcommands that need them, so `--help`, `schema` and
`docs` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from finetuning.config.methods import METHODS
from finetuning.console import report_user_error, setup_logging
from finetuning.errors import RunStopped, UserError

logger = logging.getLogger("finetuning")

TOOLS = {
    "merge-adapter": ("finetuning.tools.merge_adapter", "run"),
    "create-vllm-compatible-adapter": ("finetuning.tools.vllm_adapter", "run"),
    "generate": ("finetuning.tools.generate", "run"),
    "chat": ("finetuning.tools.generate", "run_chat"),
    "replace-tokens": ("finetuning.tools.replace_tokens", "run"),
    "score": ("finetuning.tools.score", "run"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `finetuning` (global options, then a subcommand)."""
    parser = argparse.ArgumentParser(
        prog="finetuning",
        description="Config-driven LLM fine-tuning. Train with `finetuning METHOD CONFIG` "
        f"(METHOD: {', '.join(METHODS)}); check a config and its data first with "
        "`finetuning validate`.",
    )
    _add_global_options(parser, keep_defaults=True)
    # The same options after the subcommand, listed in its --help. Their defaults are
    # suppressed there, so a value given before the subcommand is not reset by the subparser.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, keep_defaults=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, parents=[common], **kwargs)

    for method in METHODS.values():
        title = method.title
        p = add(method.name, help=f"train with {title}", description=f"Train with {title}.")
        p.add_argument("config", help="the YAML config file")

    p = add(
        "validate",
        help="check a config, its data and tokenizer without training",
        description="Validate CONFIG and run the data preflight (tokenizer and data, no model): "
        "rows per source, length handling, trained-token share, template checks.",
    )
    p.add_argument("config", help="the YAML config file")
    p.add_argument(
        "--method",
        choices=list(METHODS),
        default=None,
        help="the method (default: the config's `method`, else sft)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved config (every default filled in) as YAML on stdout",
    )
    p.add_argument(
        "--config-only", action="store_true", help="check the config only, skip the data preflight"
    )
    p.add_argument(
        "--show-example",
        type=int,
        default=None,
        metavar="N",
        help="print training example N rendered, with its trained tokens marked",
    )

    for name, what in (("schema", "the JSON Schema"), ("docs", "the Markdown reference")):
        p = add(name, help=f"print {what} of a config", description=f"Print {what}.")
        p.add_argument("method", choices=list(METHODS))

    from finetuning.tools import generate, merge_adapter, replace_tokens, score, vllm_adapter

    p = add(
        "merge-adapter",
        help="merge a PEFT adapter into its base model (also the `merge_adapter` command)",
        description=merge_adapter.build_parser().description,
    )
    merge_adapter.add_arguments(p)
    p = add(
        "create-vllm-compatible-adapter",
        help="keep only the LoRA tensors of an adapter (also `create_vllm_compatible_adapter`)",
        description=vllm_adapter.build_parser().description,
    )
    vllm_adapter.add_arguments(p)
    p = add(
        "generate",
        help="generate answers with a trained model (JSONL in/out, or a generate config)",
        description="Generate with a trained model: `finetuning generate --model M [--adapter A] "
        "--input in.jsonl --output out.jsonl`, or `finetuning generate CONFIG OUTPUT.yaml` with "
        "the established engine's generate config.",
    )
    generate.add_arguments(p)
    p = add(
        "score",
        help="score conversations with a trained reward model (JSONL in/out)",
        description="Score with a reward model: `finetuning score --model M [--adapter A] "
        "--input rows.jsonl --output scores.jsonl`. Rows with `messages` get a `score`; "
        "preference rows get `chosen_score` and `rejected_score`.",
    )
    score.add_arguments(p)
    p = add(
        "chat",
        help="chat with a trained model in the terminal (answers stream as they are generated)",
        description="Chat with MODEL (+ --adapter): each line is a user turn; /reset, /exit.",
    )
    p.add_argument("model", help="model path (a merged model, or the base with --adapter)")
    p.add_argument("--adapter", default=None, help="adapter path")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer path (default: adapter's or model's)"
    )
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--tools", default=None, help="JSON file of function schemas the model may call")
    p.add_argument("--image", default=None, help="vision-language models: an image to chat about")

    from finetuning.tools import eval as eval_tool

    p = add(
        "eval",
        help="evaluate a checkpoint (or the base model) on the config's evals",
        description="Run CONFIG's validation sets (eval_loss, eval_<source>_loss), its "
        "eval_conf.generation evals and eval_conf.lm_eval tasks on a saved checkpoint (or the "
        "base model), write eval_results.json next to it and print a table.",
    )
    eval_tool.add_arguments(p)

    p = add(
        "replace-tokens",
        help="rename tokens keeping their ids (also the `replace_tokens` command)",
        description=replace_tokens.build_parser().description,
    )
    replace_tokens.add_arguments(p)

    p = add(
        "init",
        help="write a runnable example (tiny local model, data, config)",
        description="Write a runnable example into DIR: a tiny model and tokenizer built "
        "locally, small chat, preference, feedback, text and arithmetic datasets, and a config "
        "per method (DIR/sft.yaml, DIR/dpo.yaml, DIR/kto.yaml, DIR/orpo.yaml, DIR/simpo.yaml, "
        "DIR/reward.yaml, DIR/pretrain.yaml, DIR/grpo.yaml) and DIR/generate.yaml. Run again, "
        "it leaves an unchanged example alone.",
    )
    p.add_argument("dir", help="the folder to create")
    p.add_argument(
        "--force",
        action="store_true",
        help="rewrite the example's files even if DIR holds other files or a changed example "
        "(files init did not write, such as checkpoints, are kept)",
    )
    return parser


def _add_global_options(parser: argparse.ArgumentParser, keep_defaults: bool) -> None:
    """The options every command accepts, before or after the subcommand."""
    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--logging-level",
        default="INFO" if keep_defaults else argparse.SUPPRESS,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default INFO)",
    )
    group.add_argument(
        "--num-preprocess-workers",
        type=int,
        default=None if keep_defaults else argparse.SUPPRESS,
        metavar="N",
        help="processes for data preprocessing (default: up to 4, bounded by the CPU count)",
    )
    group.add_argument(
        "--mlflow-server-uri",
        default=None if keep_defaults else argparse.SUPPRESS,
        metavar="URI",
        help="MLflow tracking URI; overrides the config's tracking section",
    )
    group.add_argument(
        "--experiment-name",
        default=None if keep_defaults else argparse.SUPPRESS,
        metavar="NAME",
        help="MLflow experiment name with --mlflow-server-uri (default: MLflow's 'Default')",
    )
    group.add_argument(
        "--hf-mlflow-log-artifacts",
        default=None if keep_defaults else argparse.SUPPRESS,
        choices=["True", "False"],
        help="log checkpoints to MLflow as artifacts",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.logging_level)
    try:
        code = _dispatch(args)
        _close_process_group()
        return code
    except UserError as exc:
        return report_user_error(exc)
    except RunStopped as exc:  # preempted (checkpoint saved) or diverged
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        return _stopped_or_raise(exc)
    finally:
        _end_run()


def _stopped_or_raise(exc: BaseException) -> int:
    """Exit codes of a signal outside the training loop and of a full disk; others re-raise."""
    from finetuning.train.safety.interrupts import Interrupted
    from finetuning.train.safety.writes import no_space_error

    if isinstance(exc, Interrupted):
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    error = no_space_error(exc) if isinstance(exc, Exception) else None
    if error is None:
        raise exc
    return report_user_error(error)


def _end_run() -> None:
    """Give back what a training run held: the output-dir lock and the signal handlers."""
    if "finetuning.train.safety.lock" in sys.modules:
        from finetuning.train.safety import interrupts, lock

        lock.release()
        interrupts.restore()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("schema", "docs"):
        import json

        from finetuning.config import reference

        if args.command == "schema":
            print(json.dumps(reference.json_schema(args.method), indent=2))
        else:
            print(reference.markdown_reference(args.method), end="")
        return 0
    if args.command == "validate":
        from finetuning.train.validate import validate

        return validate(args)
    if args.command in TOOLS:
        module_name, function = TOOLS[args.command]
        return getattr(importlib.import_module(module_name), function)(args)
    if args.command == "init":
        from finetuning.tools.init import init_example

        init_example(args.dir, force=args.force)
        return 0
    if args.command == "eval":
        return _evaluate(args)
    from finetuning.config.loading import load_config

    loaded = load_config(args.config, args.command)
    importlib.import_module(METHODS[args.command].recipe).run(loaded, args)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """`finetuning eval`: the plan's data and evals on a checkpoint; results file and table."""
    from pathlib import Path

    from finetuning.config.loading import load_config, resolved_dict
    from finetuning.tools import eval as eval_tool
    from finetuning.train.plan import build_plan
    from finetuning.train.reporting.checkpoint_eval import evaluate_model

    loaded = load_config(args.config, None)
    plan = build_plan(loaded, 1, args)
    if plan.config.method not in ("sft", "pretrain"):
        raise UserError(f"finetuning eval runs sft and pretrain configs, not {plan.config.method}")
    model = eval_tool.load_model(plan.config, args.checkpoint, plan.setup.tokenizer)
    path = eval_tool.results_path(args.checkpoint, plan.output_dir)
    results = evaluate_model(plan, model, path.parent)
    results.update(
        checkpoint=str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        base_model=plan.config.run_conf.model,
        config=str(Path(args.config).resolve()),
        config_hash=eval_tool.config_hash(resolved_dict(plan.config)),
    )
    eval_tool.write_results(path, results)
    print(eval_tool.format_table(results))
    print(f"wrote {path}")
    if plan.tracking is not None:
        from finetuning.tracking import log_eval_results

        print(f"mlflow: run {log_eval_results(plan.tracking, results, path)}")
    return 0


def _close_process_group() -> None:
    """Leave a multi-process run together: wait for every rank, then tear the group down.

    Left to interpreter exit, the communication threads can be destroyed while still running
    (seen as "terminate called without an active exception" under DeepSpeed on CPU).
    """
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
