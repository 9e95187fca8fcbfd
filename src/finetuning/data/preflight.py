"""The data preflight: prepare the data exactly as training would and report on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finetuning.config.experiment import ExperimentConfig
from finetuning.config.loading import LoadedConfig
from finetuning.data.encode import IGNORE, EncodeSettings
from finetuning.data.prepare import PreparedData, prepare_data
from finetuning.data.templates import end_marker
from finetuning.model.tokenizer import TokenizerSetup, load_tokenizer, setup_tokenizer


def encode_settings(config: ExperimentConfig) -> EncodeSettings:
    """The encode settings a config implies."""
    sft = config.sft_args
    return EncodeSettings(
        template=config.data_conf.chat_template_name,
        max_length=sft.max_seq_length
        if sft
        else int(config.training_args.get("max_length") or 2048),
        length_handling=sft.length_handling if sft else "truncate",
        completions_only=sft.train_on_completions_only if sft else True,
    )


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
        ids, labels = split.store.row(int(split.indices[n]))
        tok = self.setup.tokenizer
        pieces, trained_run = [], False
        for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
            trained = label != IGNORE
            if trained != trained_run:
                pieces.append("⟦" if trained else "⟧")
                trained_run = trained
            pieces.append(tok.decode([token]))
        if trained_run:
            pieces.append("⟧")
        return f"example {n} (trained tokens between ⟦ ⟧):\n" + "".join(pieces)


def _lengths_line(lengths: np.ndarray) -> str:
    if not len(lengths):
        return "token lengths: (no rows)"
    q = np.percentile(lengths, [50, 95])
    return (
        f"token lengths: min {int(lengths.min())}, median {int(q[0])}, p95 {int(q[1])}, "
        f"max {int(lengths.max())}"
    )


def build_report(
    config: ExperimentConfig, setup: TokenizerSetup, data: PreparedData
) -> PreflightReport:
    """Summarise prepared data: counts, lengths, trained share, template checks."""
    report = PreflightReport(data, setup)
    tok = setup.tokenizer
    lines, warnings, fatal = report.lines, report.warnings, report.fatal
    for src in data.sources:
        lines.append(f"{src.key}: {src.rows} rows ({src.path})")
    lines.append(f"training rows after mixing: {data.mixed_rows}")
    counts = data.status_counts
    settings = encode_settings(config)
    if counts["too_long_dropped"]:
        warnings.append(
            f"{counts['too_long_dropped']} rows longer than {settings.max_length} tokens were "
            "dropped (length_handling: filter)"
        )
    if counts["truncated"]:
        warnings.append(
            f"{counts['truncated']} rows longer than {settings.max_length} tokens were "
            "truncated (length_handling: truncate)"
        )
    if counts["nothing_trained"]:
        warnings.append(
            f"{counts['nothing_trained']} conversations have no trained token (e.g. the "
            "assistant turn was cut off) and were left out"
        )
    valid = len(data.valid) if data.valid is not None else 0
    lines.append(f"training rows: {len(data.train)}; validation rows: {valid}")
    store = data.train.store
    lengths = data.train.lengths()
    lines.append(_lengths_line(lengths))
    total = int(lengths.sum())
    trained = 0
    for i in data.train.indices[: min(len(data.train), 20000)]:
        trained += int((store.row(int(i))[1] != IGNORE).sum())
    sample_total = int(data.train.lengths()[: min(len(data.train), 20000)].sum())
    share = trained / sample_total if sample_total else 0.0
    lines.append(f"tokens: {total} in training rows; {share:.1%} of them are trained on")
    marker = end_marker(config.data_conf.chat_template_name, tok)
    marker_ids = tok(marker, add_special_tokens=False)["input_ids"]
    marker_trained = _marker_trained(data, marker_ids)
    lines.append(f"end-of-turn marker {marker!r} trained: {'yes' if marker_trained else 'NO'}")
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
    if not len(data.train):
        fatal.append("no training rows are left after length handling")
    elif trained == 0:
        fatal.append("every label is masked: nothing would be trained")
    return report


def _marker_trained(data: PreparedData, marker_ids: list[int]) -> bool:
    if not marker_ids:
        return False
    last = marker_ids[-1]
    for i in data.train.indices[:200]:
        ids, labels = data.train.store.row(int(i))
        if ((ids == last) & (labels != IGNORE)).any():
            return True
    return False


def preflight(loaded: LoadedConfig, num_workers: int | None = None) -> PreflightReport:
    """Load the tokenizer (no model), prepare the data as training would, and report."""
    config = loaded.config
    setup = setup_tokenizer(config, load_tokenizer(config))
    data = prepare_data(
        config.data_conf, setup.tokenizer, encode_settings(config), config.method, num_workers
    )
    return build_report(config, setup, data)


def describe(report: PreflightReport) -> dict[str, Any]:
    """The report as plain data (for tracking and the run report)."""
    return {"lines": report.lines, "warnings": report.warnings, "fatal": report.fatal}
