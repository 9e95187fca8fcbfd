"""A reward file that asks for a value at import."""

SCALE = float(input("scale? "))


def reward(completions, **kwargs):
    return [SCALE] * len(completions)
