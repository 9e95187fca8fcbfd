"""`finetuning validate`: the config, hardware and data checks of a run, without training."""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from finetuning.config.loading import load_config, resolved_dict

logger = logging.getLogger(__name__)


def validate(args: argparse.Namespace) -> int:
    """Validate a config (and, unless ``--config-only``, its data); returns the exit code."""
    loaded = load_config(args.config, args.method)
    for note in loaded.notes:
        logger.info(note)
    config = loaded.config
    if args.print_config:
        yaml.safe_dump(resolved_dict(config), sys.stdout, sort_keys=False)
    from finetuning.model.hardware import hardware_problems

    for problem in hardware_problems(config):
        logger.warning("%s (fine if you train on another machine; a run here would stop)", problem)
    if not args.config_only:
        from finetuning.data.preflight import preflight

        report = preflight(loaded, num_workers=args.num_preprocess_workers)
        print(report.format(), file=sys.stderr)
        if args.show_example is not None:
            print(report.show_example(args.show_example))
        if report.fatal:
            return 2
    print(f"{args.config}: valid {config.method} config", file=sys.stderr)
    return 0
