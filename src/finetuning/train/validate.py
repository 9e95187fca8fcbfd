"""`finetuning validate`: build the plan a run would build, print it, and train nothing."""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from finetuning.config.loading import load_config, resolved_dict

logger = logging.getLogger(__name__)


def validate(args: argparse.Namespace) -> int:
    """Build the run's plan for a config (``--config-only``: without the data); returns the exit code.

    The plan is the one :func:`finetuning.train.plan.build_plan` builds for ``sft``/``dpo``:
    batch arithmetic, output folders (checked, not created), resume point, tracking target
    (no MLflow run is started), tokenizer and data. Only hardware this machine lacks is a warning
    here instead of an error, since the config may be meant for another machine.
    """
    loaded = load_config(args.config, args.method)
    for note in loaded.notes:
        logger.info(note)
    config = loaded.config
    if args.print_config:
        yaml.safe_dump(resolved_dict(config), sys.stdout, sort_keys=False)
    from finetuning.train.arguments import world_size
    from finetuning.train.plan import build_plan

    plan = build_plan(
        loaded,
        world_size(),
        args,
        with_data=not args.config_only,
        hardware_must_fit=False,
    )
    for problem in plan.hardware_problems:
        logger.warning("%s (fine if you train on another machine; a run here would stop)", problem)
    print(plan.format(), file=sys.stderr)
    report = plan.report
    if report is not None:
        print(report.format(), file=sys.stderr)
        if args.show_example is not None:
            print(report.show_example(args.show_example))
        if report.fatal:
            return 2
    print(f"{args.config}: valid {config.method} config", file=sys.stderr)
    return 0
