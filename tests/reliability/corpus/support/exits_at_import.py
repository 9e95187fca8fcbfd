"""A reward file that is really a script: it exits when imported."""

import sys


def reward(completions, **kwargs):
    return [0.0] * len(completions)


sys.exit(0)
