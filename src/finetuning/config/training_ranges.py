"""The meaningful ranges of numeric ``training_args``, checked before anything loads.

transformers and TRL accept ``num_train_epochs: -1`` without ``max_steps`` (0 steps, an untrained
model saved as final), ``learning_rate: nan`` or a negative seed and fail, if at all, after the
model has loaded. With ``max_steps > 0`` transformers ignores ``num_train_epochs``, so any value
is accepted then (the established engine's own test configs use ``-1`` with ``max_steps``). ``RANGES`` is the one table of what each numeric field may be; :func:`range_problem`
applies it (and rejects ``nan``/``inf`` in every numeric field, listed or not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from finetuning.errors import Problem


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric field.

    Attributes:
        low: The smallest allowed value (None: unbounded).
        high: The largest allowed value (None: unbounded).
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
        meaning: Why, or what the special values mean, shown in the error.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    meaning: str = ""

    def allows(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (
            value > self.high or (self.high_open and value == self.high)
        )

    def describe(self) -> str:
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
        high = (
            "" if self.high is None else f"{'<' if self.high_open else '<='} {_number(self.high)}"
        )
        text = " and ".join(p for p in (low, high) if p)
        return f"{text} ({self.meaning})" if self.meaning else text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_SEED = Range(0, 2**32 - 1, meaning="numpy and torch take seeds in [0, 2**32)")
_POSITIVE = Range(0, low_open=True)
_NON_NEGATIVE = Range(0)
_AT_LEAST_ONE = Range(1)
_BETA = Range(0, 1, high_open=True, meaning="an exponential decay rate")
_INTERVAL = Range(0, low_open=True, meaning="a number of steps, or a share of training below 1")

#: Field -> allowed range, for SFT (TrainingArguments) and DPO (DPOConfig) alike; a field the
#: method does not have is never looked up.
RANGES: dict[str, Range] = {
    "learning_rate": Range(0),
    "num_train_epochs": Range(
        0, meaning="0 only together with max_steps > 0; ignored, so any value, with max_steps > 0"
    ),
    "max_steps": Range(-1, meaning="-1 or 0: num_train_epochs decides"),
    "seed": _SEED,
    "data_seed": _SEED,
    "warmup_steps": Range(0, meaning="a number of steps, or a share of training below 1"),
    "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": Range(0, meaning="0 turns clipping off"),
    "adam_beta1": _BETA,
    "adam_beta2": _BETA,
    "adam_epsilon": _POSITIVE,
    "label_smoothing_factor": Range(0, 1, high_open=True),
    "logging_steps": _INTERVAL,
    "save_steps": _INTERVAL,
    "eval_steps": _INTERVAL,
    "eval_delay": _NON_NEGATIVE,
    "save_total_limit": Range(0, meaning="0 keeps every checkpoint"),
    "dataloader_num_workers": _NON_NEGATIVE,
    "dataloader_prefetch_factor": _AT_LEAST_ONE,
    "eval_accumulation_steps": _AT_LEAST_ONE,
    "torch_empty_cache_steps": _AT_LEAST_ONE,
    "neftune_noise_alpha": _POSITIVE,
    "ddp_timeout": _AT_LEAST_ONE,
    # DPO (TRL DPOConfig) and the engine's DPO length fields.
    "beta": _POSITIVE,
    "label_smoothing": Range(0, 0.5, meaning="the assumed share of flipped preference labels"),
    "max_length": _AT_LEAST_ONE,
    "max_prompt_length": _AT_LEAST_ONE,
    "max_completion_length": _AT_LEAST_ONE,
    "precompute_ref_batch_size": _AT_LEAST_ONE,
    "dataset_num_proc": _AT_LEAST_ONE,
    "ref_model_sync_steps": _AT_LEAST_ONE,
    "ref_model_mixup_alpha": Range(0, 1),
    "discopop_tau": _POSITIVE,
}


#: A loss weight of KTO (TRL 1.16 KTOConfig: "losses are weighed by this factor"): a negative
#: one turns the objective around, 0 leaves that kind of example out of the loss.
_KTO_WEIGHT = Range(
    0,
    low_open=True,
    meaning="a loss weight: negative reverses the objective and 0 ignores those examples; "
    "leave the rows out instead of weighting them 0",
)
#: CPO and SimPO (TRL 1.16 CPOConfig): the weight of the behaviour-cloning (NLL) term and the
#: SimPO target reward margin; a negative weight trains the chosen answers away, a negative
#: margin asks for rejected above chosen.
_CPO = {
    "cpo_alpha": Range(0, meaning="the weight of the chosen answers' NLL term; 0 turns it off"),
    "simpo_gamma": Range(0, meaning="the target margin of chosen over rejected rewards"),
}

#: Method -> ranges that differ from :data:`RANGES` (or that only that method's fields have).
#: ``beta`` (> 0 in :data:`RANGES`) is DPO's and KTO's KL strength, ORPO's odds-ratio weight
#: (lambda in the ORPO paper) and CPO/SimPO's reward scale: every one of them > 0.
METHOD_RANGES: dict[str, dict[str, Range]] = {
    "kto": {"desirable_weight": _KTO_WEIGHT, "undesirable_weight": _KTO_WEIGHT},
    "simpo": dict(_CPO),
    "grpo": {
        "beta": Range(0, meaning="0 loads no reference model and adds no KL penalty"),
        "num_generations": Range(2, meaning="a group needs at least 2 completions"),
        "num_generations_eval": Range(1),
        "num_iterations": _AT_LEAST_ONE,
        "temperature": Range(0, low_open=True, meaning="sampling temperature; 0 is not sampling"),
        "top_p": Range(0, 1, low_open=True),
        "top_k": Range(0, meaning="0 turns top-k filtering off"),
        "min_p": Range(0, 1),
        "repetition_penalty": _POSITIVE,
        "epsilon": Range(0, meaning="the clipping range of the probability ratio"),
        "epsilon_high": Range(0, meaning="the upper clipping range of the probability ratio"),
        "delta": Range(1, low_open=True, meaning="an upper bound of the probability ratio"),
        "sapo_temperature_neg": _POSITIVE,
        "sapo_temperature_pos": _POSITIVE,
        "top_entropy_quantile": Range(0, 1),
    },
}


#: Fields transformers ignores once ``max_steps > 0``: their range holds only without it.
IGNORED_WITH_MAX_STEPS = ("num_train_epochs",)


def range_problem(key: str, value: Any, method: str | None = None) -> Problem | None:
    """The problem with ``training_args.<key>: value``, or None (non-numbers are not checked).

    ``method`` picks its own ranges (:data:`METHOD_RANGES`) over the shared ones.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    where = f"training_args.{key}"
    if isinstance(value, float) and not math.isfinite(value):
        return Problem(f"must be a finite number, got {value!r}", where)
    if key in IGNORED_WITH_MAX_STEPS:
        return None  # checked with max_steps, by cross_field_problems
    spec = METHOD_RANGES.get(method or "", {}).get(key, RANGES.get(key))
    if spec is not None and not spec.allows(value):
        return Problem(f"must be {spec.describe()}, got {value!r}", where)
    return None


def cross_field_problems(training_args: dict[str, Any]) -> list[Problem]:
    """Rules over several fields: a run must have some length."""
    epochs = training_args.get("num_train_epochs", 3.0)
    max_steps = training_args.get("max_steps", -1)
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (epochs, max_steps)
    )
    if not numbers or max_steps > 0:
        return []
    for key in IGNORED_WITH_MAX_STEPS:
        value = training_args.get(key)
        if key in training_args and not RANGES[key].allows(value):
            return [
                Problem(f"must be {RANGES[key].describe()}, got {value!r}", f"training_args.{key}")
            ]
    if epochs == 0:
        return [
            Problem(
                "is 0 and max_steps is not set (> 0): the run would train 0 steps and save an "
                "untrained model; set num_train_epochs > 0 or max_steps",
                "training_args.num_train_epochs",
            )
        ]
    return []
