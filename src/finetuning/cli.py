"""The `finetuning` command: argument parsing and dispatch only.

Exit codes: 0 success, 2 user error (one clear message, no traceback), 1 anything else.
Heavy libraries are imported by the subcommands that need them, so `--help`, `schema` and
`docs` stay fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from finetuning.errors import RunStopped, UserError

logger = logging.getLogger("finetuning")

EXIT_USER_ERROR = 2

TOOLS = {
    "merge-adapter": ("finetuning.tools.merge_adapter", "run"),
    "create-vllm-compatible-adapter": ("finetuning.tools.vllm_adapter", "run"),
    "generate": ("finetuning.tools.generate", "run"),
    "chat": ("finetuning.tools.generate", "run_chat"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `finetuning` (global options, then a subcommand)."""
    parser = argparse.ArgumentParser(
        prog="finetuning",
        description="Config-driven LLM fine-tuning. Train with `finetuning sft CONFIG` or "
        "`finetuning dpo CONFIG`; check a config and its data first with `finetuning validate`.",
    )
    parser.add_argument(
        "--logging-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default INFO)",
    )
    parser.add_argument(
        "--num-preprocess-workers",
        type=int,
        default=None,
        metavar="N",
        help="processes for data preprocessing (default: up to 4, bounded by the CPU count)",
    )
    parser.add_argument(
        "--mlflow-server-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI; overrides the config's tracking section",
    )
    parser.add_argument(
        "--experiment-name",
        default=None,
        metavar="NAME",
        help="MLflow experiment name with --mlflow-server-uri (default 'default')",
    )
    parser.add_argument(
        "--hf-mlflow-log-artifacts",
        default=None,
        choices=["True", "False"],
        help="log checkpoints to MLflow as artifacts",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for method, title in (
        ("sft", "supervised fine-tuning"),
        ("dpo", "direct preference optimisation"),
    ):
        p = sub.add_parser(method, help=f"train with {title}", description=f"Train with {title}.")
        p.add_argument("config", help="the YAML config file")

    p = sub.add_parser(
        "validate",
        help="check a config, its data and tokenizer without training",
        description="Validate CONFIG and run the data preflight (tokenizer and data, no model): "
        "rows per source, length handling, trained-token share, template checks.",
    )
    p.add_argument("config", help="the YAML config file")
    p.add_argument(
        "--method",
        choices=["sft", "dpo"],
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
        p = sub.add_parser(name, help=f"print {what} of a config", description=f"Print {what}.")
        p.add_argument("method", choices=["sft", "dpo"])

    from finetuning.tools import generate, merge_adapter, vllm_adapter

    p = sub.add_parser(
        "merge-adapter",
        help="merge a PEFT adapter into its base model (also the `merge_adapter` command)",
        description=merge_adapter.build_parser().description,
    )
    merge_adapter.add_arguments(p)
    p = sub.add_parser(
        "create-vllm-compatible-adapter",
        help="keep only the LoRA tensors of an adapter (also `create_vllm_compatible_adapter`)",
        description=vllm_adapter.build_parser().description,
    )
    for action in vllm_adapter.build_parser()._actions[1:]:
        p._add_action(action)
    p = sub.add_parser(
        "generate",
        help="generate answers with a trained model (JSONL in/out, or a generate config)",
        description="Generate with a trained model: `finetuning generate --model M [--adapter A] "
        "--input in.jsonl --output out.jsonl`, or `finetuning generate CONFIG OUTPUT.yaml` with "
        "the established engine's generate config.",
    )
    generate.add_arguments(p)
    p = sub.add_parser(
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

    p = sub.add_parser(
        "init",
        help="write a runnable example (tiny local model, data, config)",
        description="Write a runnable example into DIR: a tiny model and tokenizer built "
        "locally, a small chat dataset and DIR/sft.yaml.",
    )
    p.add_argument("dir", help="the folder to create")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.logging_level)
    try:
        code = _dispatch(args)
        _close_process_group()
        return code
    except UserError as exc:
        print(f"error: {exc.format()}", file=sys.stderr)
        return EXIT_USER_ERROR
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
    from finetuning.train.interrupts import Interrupted
    from finetuning.train.writes import no_space_error

    if isinstance(exc, Interrupted):
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    error = no_space_error(exc) if isinstance(exc, Exception) else None
    if error is None:
        raise exc
    print(f"error: {error.format()}", file=sys.stderr)
    return EXIT_USER_ERROR


def _end_run() -> None:
    """Give back what a training run held: the output-dir lock and the signal handlers."""
    if "finetuning.train.lock" in sys.modules:
        from finetuning.train import interrupts, lock

        lock.release()
        interrupts.restore()


def run_tool(action: Callable[[], int]) -> int:
    """Run a companion console script with the same logging and exit codes as `finetuning`."""
    _setup_logging("INFO")
    try:
        return action()
    except UserError as exc:
        print(f"error: {exc.format()}", file=sys.stderr)
        return EXIT_USER_ERROR


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
        from finetuning.validate import validate

        return validate(args)
    if args.command in TOOLS:
        module_name, function = TOOLS[args.command]
        import importlib

        return getattr(importlib.import_module(module_name), function)(args)
    if args.command == "init":
        from finetuning.tools.init import init_example

        init_example(args.dir)
        return 0
    from finetuning.config.loading import load_config

    loaded = load_config(args.config, args.command)
    if args.command == "sft":
        from finetuning.train import sft

        sft.run(loaded, args)
    else:
        from finetuning.train import dpo

        dpo.run(loaded, args)
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


def _setup_logging(level: str) -> None:
    rank = os.environ.get("RANK")
    prefix = (
        f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    )
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


if __name__ == "__main__":
    raise SystemExit(main())
