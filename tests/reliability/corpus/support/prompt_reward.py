"""A reward that wants the row's `prompt` key, which TRL keeps for itself."""


def reward(completions, prompt):
    return [float(len(prompt) > 0)] * len(completions)
