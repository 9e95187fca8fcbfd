"""A reward script that parses its command line at import."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--scale", type=float, required=True)
ARGS = parser.parse_args()


def reward(completions, **kwargs):
    return [ARGS.scale] * len(completions)
