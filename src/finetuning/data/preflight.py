"""The data preflight: prepare the data exactly as training would and report on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from finetuning.config.data import ChatTemplateName
from finetuning.config.experiment import ExperimentConfig
from finetuning.config.loading import LoadedConfig
from finetuning.config.methods import rows_of
from finetuning.config.training_args import training_arg_default
from finetuning.data.encode import IGNORE, UNRENDERED, WHOLE, EncodeSettings, TokenStore
from finetuning.data.messages import is_agent_row
from finetuning.data.preference import PreferenceStore
from finetuning.data.prepare import EncodedSplit, PreparedData, prepare_data
from finetuning.data.processor import is_vision_model, load_processor
from finetuning.data.prompts import RESERVED_KEYS, reward_columns
from finetuning.data.sources import format_mixture
from finetuning.data.templates import end_marker
from finetuning.data.tokenizer import TokenizerSetup, load_tokenizer, setup_tokenizer
from finetuning.data.unpaired import FROM_PAIR, balance_lines, desirable_counts
from finetuning.data.vision_report import marked_example, vision_lines


def encode_settings(config: ExperimentConfig) -> EncodeSettings:
    """The encode settings a config implies (SFT, pretrain: sft_args; DPO, reward: the length
    fields of training_args)."""
    template = config.data_conf.chat_template_name
    sft = config.sft_args
    if rows_of(config.method) == "text":
        return EncodeSettings(template, sft.max_seq_length, sft.length_handling)
    if config.method == "reward":  # TRL's RewardTrainer drops a pair that does not fit
        length = config.training_args.get(
            "max_length", training_arg_default("reward", "max_length")
        )
        return EncodeSettings(
            template,
            length or 2**31 - 1,
            truncation_mode="drop",
            allow_unrendered=config.data_conf.allow_unrendered_content,
        )
    if sft is not None:
        return EncodeSettings(
            template,
            sft.max_seq_length,
            sft.length_handling,
            sft.train_on_completions_only,
            train_on_reasoning=sft.train_on_reasoning,
            drop_past_reasoning=sft.drop_past_reasoning,
            history_rule=config.data_conf.history_rule,
            allow_unrendered=config.data_conf.allow_unrendered_content,
        )
    allow = config.data_conf.allow_unrendered_content
    if rows_of(config.method) == "prompt":  # GRPO: the prompt is all there is to encode
        limit = config.grpo_args.max_prompt_length
        return EncodeSettings(
            template, max_length=limit, max_prompt_length=limit, allow_unrendered=allow
        )
    args, method = config.training_args, config.method
    return EncodeSettings(
        template,
        allow_unrendered=allow,
        max_length=int(args.get("max_length") or training_arg_default(method, "max_length")),
        max_prompt_length=args.get("max_prompt_length"),
        truncation_mode=args.get(
            "truncation_mode", training_arg_default(method, "truncation_mode")
        ),
    )


def _labelled(split: EncodedSplit, limit: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, labels) of up to ``limit`` rows: SFT examples, or DPO prompt + chosen completions."""
    store = split.store
    for i in split.indices[:limit]:
        if isinstance(store, PreferenceStore):
            prompt, _ = store.prompt.row(int(i))
            chosen, labels = store.chosen.row(int(i))
            yield (
                np.concatenate([prompt, chosen]),
                np.concatenate([np.full(len(prompt), IGNORE), labels]),
            )
        else:
            yield store.row(int(i))


@dataclass
class PreflightReport:
    """What the preflight found; ``fatal`` problems make training meaningless."""

    data: PreparedData
    setup: TokenizerSetup
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)

    def format(self) -> str:
        out = ["data preflight:", *(f"  {line}" for line in self.lines)]
        out += [f"  WARNING: {w}" for w in self.warnings]
        out += [f"  ERROR: {f}" for f in self.fatal]
        return "\n".join(out)

    def show_example(self, n: int) -> str:
        """Training example ``n`` decoded, trained tokens between ⟦ and ⟧."""
        split = self.data.train
        if not 0 <= n < len(split):
            return f"there is no training example {n} (0..{len(split) - 1})"
        ids, labels = next(_labelled(EncodedSplit(split.store, split.indices[n : n + 1]), 1))
        if self.setup.processor is not None and hasattr(split.store, "image_of"):  # image rows
            marked = marked_example(split.store, int(split.indices[n]), self.data.rows, self.setup)
            return f"example {n} (trained tokens between ⟦ ⟧, images as ⟨ ⟩):\n{marked}"
        text = f"example {n} (trained tokens between ⟦ ⟧):\n" + self._marked(ids, labels)
        if isinstance(split.store, PreferenceStore):
            rejected = split.store.rejected.row(int(split.indices[n]))[0]
            text += "\nrejected completion:\n" + self.setup.tokenizer.decode(rejected.tolist())
        return text

    def _marked(self, ids: np.ndarray, labels: np.ndarray) -> str:
        pieces, trained_run = [], False
        for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
            trained = label != IGNORE
            if trained != trained_run:
                pieces.append("⟦" if trained else "⟧")
                trained_run = trained
            pieces.append(self.setup.tokenizer.decode([token]))
        return "".join(pieces) + ("⟧" if trained_run else "")


def _lengths_line(lengths: np.ndarray) -> str:
    if not len(lengths):
        return "token lengths: (no rows)"
    q = np.percentile(lengths, [50, 95])
    return (
        f"token lengths: min {int(lengths.min())}, median {int(q[0])}, p95 {int(q[1])}, "
        f"max {int(lengths.max())}"
    )


def _agent_lines(config: ExperimentConfig, data: PreparedData, report: PreflightReport) -> None:
    """Tool and reasoning rows: how many, unknown function names, what is trained."""
    agent = sum(is_agent_row(r) for r in data.rows)
    if not agent:
        return
    report.lines.append(f"rows with tools, tool calls, tool results or reasoning: {agent}")
    unknown = [r for r in data.rows if r.get("_warnings")]
    if unknown:
        first = unknown[0]
        report.warnings.append(
            f"{len(unknown)} rows call a function that is not in their `tools` (first: "
            f"{first['_where']}: {first['_warnings'][0]})"
        )
    sft = config.sft_args
    if sft is not None and not sft.train_on_completions_only:
        report.warnings.append(
            "sft_args.train_on_completions_only is false, so tool results, system and user turns "
            "are trained too: set it to true to train only the assistant's answers and tool calls"
        )


def _history_lines(config: ExperimentConfig, data: PreparedData, report: PreflightReport) -> None:
    """keep-original: which history rule ran, on how many conversations, with what result."""
    store = data.train.store
    if config.data_conf.chat_template_name != ChatTemplateName.KEEP_ORIGINAL or not isinstance(
        store, TokenStore
    ):
        return
    idx = data.train.indices
    flags, rows = np.asarray(store.flags)[idx], np.asarray(store.source_rows)[idx]
    lengths = store.lengths()[idx]
    whole = (flags & WHOLE) != 0
    per_turn_rows = len(np.unique(rows[~whole]))
    report.lines.append(
        f"history rule (data_conf.history_rule: {config.data_conf.history_rule.value}): "
        f"{int(whole.sum())} conversations trained whole ({int(lengths[whole].sum())} tokens), "
        f"{per_turn_rows} turn by turn into {int((~whole).sum())} examples "
        f"({int(lengths[~whole].sum())} tokens)"
    )
    dropped = len(np.unique(rows[(flags & UNRENDERED) != 0]))
    if dropped:
        report.warnings.append(
            f"{dropped} conversations carry tool calls, tools or reasoning that the tokenizer's "
            "chat template does not render: they are trained without them "
            "(data_conf.allow_unrendered_content: true)"
        )


def _kto_lines(config: ExperimentConfig, data: PreparedData, report: PreflightReport) -> None:
    """Desirable/undesirable counts, the weights and the range TRL recommends for them."""
    unpaired_rows = sum(1 for r in data.rows if r.get(FROM_PAIR))
    if unpaired_rows:
        report.lines.append(
            f"preference rows unpaired into one desirable and one undesirable example: "
            f"{unpaired_rows // 2}"
        )
    args = config.training_args
    weights = [
        float(args.get(name, training_arg_default(config.method, name)))
        for name in ("desirable_weight", "undesirable_weight")
    ]
    lines, warnings = balance_lines(*desirable_counts(data.train), *weights)
    report.lines += lines
    report.warnings += warnings


def evaluation_warnings(config: ExperimentConfig, data: PreparedData) -> list[str]:
    """Evaluation that was asked for but cannot run, or validation data that is never used."""
    strategy = config.training_args.get("eval_strategy", "no")
    validation = config.data_conf.validation_data.type
    if strategy != "no" and data.valid is not None and not len(data.valid):
        return [
            f"training_args.eval_strategy is {strategy!r} but no validation rows are left after "
            "length handling (data_conf.validation_data): there is nothing to evaluate on, so "
            "no eval_loss will be reported; give validation rows that fit, or set eval_strategy: 'no'"
        ]
    if strategy == "no" and validation != "NONE":
        held = (
            " (AUTO_SPLIT still holds its rows back from training)"
            if validation == "AUTO_SPLIT"
            else ""
        )
        return [
            f"data_conf.validation_data is {validation} but training_args.eval_strategy is 'no': "
            f"the validation data is never evaluated{held}; set eval_strategy: steps or epoch"
        ]
    return []


def _prompt_lines(data: PreparedData, report: PreflightReport) -> None:
    """GRPO: the prompt tokens and the row keys the reward functions receive."""
    lengths = data.train.lengths()
    report.lines.append(
        f"tokens: {int(lengths.sum())} in training prompts (completions are generated while "
        "training)"
    )
    found = {k for r in data.rows for k in r if k != "prompt_messages" and k[0] != "_"}
    keys = sorted({k for r in data.rows for k in reward_columns(r)} - {"prompt_messages"})
    report.lines.append(
        "row keys passed to the reward functions: " + (", ".join(keys) if keys else "(none)")
    )
    if reserved := sorted(found & set(RESERVED_KEYS)):
        report.warnings.append(
            f"rows carry {', '.join(reserved)}, which TRL reserves for its own columns: those "
            "keys are not passed to the reward functions (rename them to pass them)"
        )


def build_report(
    config: ExperimentConfig, setup: TokenizerSetup, data: PreparedData
) -> PreflightReport:
    """Summarise prepared data: counts, lengths, trained share, template checks."""
    report = PreflightReport(data, setup)
    tok = setup.tokenizer
    lines, warnings, fatal = report.lines, report.warnings, report.fatal
    for src in data.sources:
        how = "detected" if src.detected else "set by format:"
        lines.append(f"{src.key}: {src.rows} rows ({src.path}; format {src.format}, {how})")
    lines.append(f"training rows after mixing: {data.mixed_rows}")
    if data.mixture:  # PRECOMPUTE_WEIGHTED_MIX (docs/evaluating.md)
        lines.extend(format_mixture(data.mixture, config.data_conf.training_data.weight_by))
    if data.valid_parts and config.method in ("sft", "pretrain"):  # eval_<source>_loss each
        parts = ", ".join(f"{k} {len(v)}" for k, v in data.valid_parts.items())
        lines.append(f"validation rows by source (eval_<source>_loss): {parts}")
    _agent_lines(config, data, report)
    _history_lines(config, data, report)
    counts = data.status_counts
    settings = encode_settings(config)
    how = {
        "chat": "length_handling",
        "text": "length_handling",
        "preference": "max_length / max_prompt_length / truncation_mode",
        "unpaired": "max_length / max_prompt_length / truncation_mode",
        "prompt": "grpo_args.max_prompt_length",
    }[rows_of(config.method)]
    if config.method == "reward":
        how = "training_args.max_length"
    if counts.get("split_documents"):
        lines.append(
            f"{counts['split_documents']} rows longer than {settings.max_length} tokens were "
            f"split into {counts['chunks']} chunks (length_handling: chunk)"
        )
    if counts["too_long_dropped"]:
        warnings.append(
            f"{counts['too_long_dropped']} rows longer than {settings.max_length} tokens were "
            f"dropped ({how})"
        )
    if counts["truncated"]:
        warnings.append(
            f"{counts['truncated']} rows longer than {settings.max_length} tokens were "
            f"truncated ({how})"
        )
    if counts["nothing_trained"]:
        warnings.append(
            f"{counts['nothing_trained']} conversations have no trained token (e.g. the "
            "assistant turn was cut off) and were left out"
        )
    if counts.get("identical_dropped"):
        warnings.append(
            f"{counts['identical_dropped']} preference rows have identical chosen and rejected "
            f"completions (after tokenisation) and were dropped: {config.method} learns nothing "
            "from them"
        )
    valid = len(data.valid) if data.valid is not None else 0
    lines.append(f"training rows: {len(data.train)}; validation rows: {valid}")
    if rows_of(config.method) == "unpaired":
        _kto_lines(config, data, report)
    warnings += evaluation_warnings(config, data)
    lengths = data.train.lengths()
    lines.append(_lengths_line(lengths))
    if rows_of(config.method) == "prompt":
        _prompt_lines(data, report)
        lines.append(f"padding: {setup.pad_note}; prompts are padded on the left to generate")
        cache = "hit" if data.cache_hit else "miss"
        lines.append(f"prepared in {data.seconds:.1f}s (cache {cache}: {data.cache_path})")
        return report
    trained = total = 0
    marker = end_marker(config.data_conf.chat_template_name, tok)
    marker_id = tok.convert_tokens_to_ids(marker)
    marker_trained = False
    for ids, labels in _labelled(data.train, 20000):
        trained += int((labels != IGNORE).sum())
        total += len(ids)
        marker_trained = marker_trained or bool(((ids == marker_id) & (labels != IGNORE)).any())
    share = trained / total if total else 0.0
    if rows_of(config.method) in ("chat", "text"):
        lines.append(
            f"tokens: {int(lengths.sum())} in training rows; {share:.1%} of them are trained on"
        )
    elif rows_of(config.method) == "unpaired":
        lines.append(
            f"tokens: {int(lengths.sum())} in prompts + completions; the completions are "
            f"{share:.1%} of them"
        )
    else:
        lines.append(
            f"tokens: {int(lengths.sum())} in prompts + longer completions; the chosen completion "
            f"is {share:.1%} of prompt + chosen"
        )
    what = "end-of-document EOS" if rows_of(config.method) == "text" else "end-of-turn marker"
    lines.append(f"{what} {marker!r} trained: {'yes' if marker_trained else 'NO'}")
    if not marker_trained and len(data.train):
        warnings.append(
            f"the end-of-turn marker {marker!r} is never trained: the model will not learn to stop"
        )
    lines.append(f"padding: {setup.pad_note}; side {config.data_conf.padding_side}")
    if tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id:
        warnings.append(
            "pad equals EOS: EOS labels are not masked by us, but other tools may mask them"
        )
    if setup.added_tokens:
        lines.append(
            f"tokens added to the vocabulary: {', '.join(setup.added_tokens)} (the model's "
            "embeddings will be resized)"
        )
    cache = "hit" if data.cache_hit else "miss"
    lines.append(f"prepared in {data.seconds:.1f}s (cache {cache}: {data.cache_path})")
    if trained == 0:
        fatal.append("every label is masked: nothing would be trained")
    return report


def preflight(
    loaded: LoadedConfig,
    num_workers: int | None = None,
    main_process_first: Callable[[], AbstractContextManager] = nullcontext,
) -> PreflightReport:
    """Load the tokenizer (no model), prepare the data as training would, and report.

    Args:
        loaded: The loaded config.
        num_workers: Preprocessing processes (default: up to 4, bounded by the CPU count).
        main_process_first: The context the data is prepared in (in a multi-process run, the
            main process fills the cache first and the others reuse it).
    """
    config = loaded.config
    processor = load_processor(config) if is_vision_model(config) else None
    tokenizer = processor.tokenizer if processor is not None else load_tokenizer(config)
    setup = setup_tokenizer(config, tokenizer)
    setup.processor = processor
    with main_process_first():
        data = prepare_data(
            config.data_conf,
            setup.tokenizer,
            encode_settings(config),
            config.method,
            num_workers,
            processor=processor,
        )
    report = build_report(config, setup, data)
    vision_lines(config, data, report)
    return report
