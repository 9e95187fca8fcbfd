"""GRPO's own config: the reward functions and the generation switch (pure data).

A reward is named here, not imported: ``function`` is a built-in name, ``package.module:function``
or ``path/to/file.py:function``. The run resolves and checks every reward in its plan, before the
model loads (``finetuning.train.methods.reward_loading``); this model only checks the shape of the spec.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from finetuning.config.strict import StrictModel

#: The reward functions the engine ships (``finetuning.train.methods.rewards``).
BUILTIN_REWARDS = ("exact_answer", "regex_format", "length", "think_format")

_IMPORT_PATH = re.compile(r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_]*$")


class RewardSpec(StrictModel):
    """One reward function and its weight in the total reward."""

    function: str = Field(min_length=1)
    """A built-in (exact_answer, regex_format, length, think_format), a function in an
    importable module (``package.module:function``) or in a Python file
    (``path/to/file.py:function``, relative to the config file)."""
    weight: float = Field(default=1.0, allow_inf_nan=False)
    """Weight of this reward in the total reward (the advantages are computed from the sum)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments bound to the function (e.g. ``pattern`` for regex_format,
    ``target`` for length)."""
    name: str | None = None
    """The name its metrics are logged under (``rewards/NAME/mean``); default: the function's name
    (with ``_2``, ``_3``... when two rewards share it)."""

    @field_validator("function")
    @classmethod
    def _check_function(cls, value: str) -> str:
        if value in BUILTIN_REWARDS or _IMPORT_PATH.match(value):
            return value
        raise ValueError(
            f"{value!r} is neither a built-in reward ({', '.join(BUILTIN_REWARDS)}) nor "
            "`package.module:function` / `path/to/file.py:function`"
        )


class GRPOArguments(StrictModel):
    """GRPO arguments (ours; TRL's own, such as num_generations and beta, are in training_args)."""

    rewards: list[RewardSpec] = Field(min_length=1)
    """The reward functions; each completion's reward is the weighted sum of theirs."""
    max_prompt_length: int = Field(default=1024, ge=1)
    """Prompts (rendered with the chat template and the generation prompt) longer than this many
    tokens are left out, and counted in the data report."""
    use_vllm: bool = False
    """Generate with vLLM inside the training process (TRL's colocate mode). Needs the ``vllm``
    package and a CUDA GPU; without it, generation is plain transformers ``generate``."""
    completions_every: int = Field(default=1, ge=0)
    """Every this many logging steps, write a few sampled completions with their rewards to
    ``output_dir/completions.jsonl`` (0: never)."""
    completions_per_log: int = Field(default=4, ge=1)
    """How many completions each write of ``completions.jsonl`` records."""
