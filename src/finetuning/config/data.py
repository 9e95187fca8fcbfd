"""Data configuration: which files to train and validate on, the chat template and padding."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from finetuning.config.strict import StrictModel

#: What a source label may hold (it becomes part of metric names: ``eval_<label>_loss``).
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _stem(definition: DatasetDefinition | WeightedDatasetDefinition) -> str:
    """A dataset's file stem (or a Hub id's last part), made safe for a metric name."""
    name = definition.path.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".gz", ".zst", ".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "data"


def source_labels(datasets: list) -> list[str]:
    """The names of one list's datasets in per-source metrics and the mixture table.

    A dataset's ``label``, else its file stem. Stems repeat often (``a/train.jsonl`` beside
    ``b/train.jsonl``), so a stem already taken gets the next free ``_2``, ``_3``... in list
    order; only explicit labels must be distinct (:func:`check_labels`).
    """
    taken = {d.label for d in datasets if d.label}
    out = []
    for d in datasets:
        label = d.label
        if not label:
            stem = label = _stem(d)
            n = 1
            while label in taken:
                n += 1
                label = f"{stem}_{n}"
            taken.add(label)
        out.append(label)
    return out


def check_labels(datasets: list, where: str) -> None:
    """Refuse two datasets of one list with the same ``label`` (their metrics would collide)."""
    seen: dict[str, int] = {}
    for i, d in enumerate(datasets):
        if not d.label:
            continue
        if d.label in seen:
            raise ValueError(
                f"{where}.datasets[{i}] and datasets[{seen[d.label]}] share the label "
                f"{d.label!r} (per-source metrics are named by it): give one of them a distinct "
                "`label:`"
            )
        seen[d.label] = i


class ChatTemplateName(StrEnum):
    """Chat template to use."""

    MISTRAL_WITH_SYSTEM = "mistral-with-system"
    CHAT_ML = "chat-ml"
    PORO = "poro"
    KEEP_ORIGINAL = "keep-original"
    SIMPLIFIED_LLAMA31 = "simplified-llama31"


class HistoryRule(StrEnum):
    """How ``keep-original`` turns a conversation into training examples.

    Many model templates render a conversation's history differently from what the model saw
    when it generated each turn (Qwen3 drops past reasoning, GPT-OSS its analysis channel,
    DeepSeek and Nemotron pre-fill ``<think>`` in the generation prompt). Training on the whole
    rendering would teach turns in a context the model never meets at inference.

    ``auto``: the whole conversation is one example where the template is prefix-preserving for
    it (each turn renders the same with or without the later turns, and continues its generation
    prompt); otherwise one example per assistant turn. ``per-turn``: always one example per
    assistant turn: the conversation up to that turn rendered with the generation prompt, exactly
    as at inference, and only that turn trained. ``last-turn``: one example per conversation, the
    last assistant turn only, rendered the same way. ``whole``: the whole conversation as one
    example, every assistant turn trained; a row the template renders differently once later
    turns follow is an error.
    """

    AUTO = "auto"
    PER_TURN = "per-turn"
    LAST_TURN = "last-turn"
    WHOLE = "whole"


class MissingPadTokenStrategy(StrEnum):
    """What to use for padding when the tokenizer has no pad token.

    Repurposing EOS is common but hurts when the model should learn to predict EOS: padding
    labels are ignored, so EOS would never be trained. Repurposing BOS (the default) avoids that.
    Repurposing UNK works for tokenizers that never produce UNK in normal data.
    ``unk-convert-to-eos`` pads with UNK, but the collator turns input-side padding into EOS while
    its labels stay ignored; the tokenizer's pad token stays UNK, so set it again for inference.
    """

    EOS_REPURPOSE = "eos-repurpose"
    BOS_REPURPOSE = "bos-repurpose"
    UNK_REPURPOSE = "unk-repurpose"
    UNK_CONVERT_TO_EOS = "unk-convert-to-eos"


#: The dataset formats ``format:`` names (``data/schemas.py`` reads them; a test keeps both equal).
DatasetFormat = Literal[
    "messages",
    "sharegpt",
    "alpaca",
    "prompt-completion",
    "text",
    "preference",
    "prompt-chosen-rejected",
    "chosen-rejected",
    "kto",
    "prompt-completion-label",
    "prompt-messages",
    "prompt",
]


class DatasetDefinition(StrictModel):
    """Define how to load a dataset."""

    path: str
    """Where the rows are: a JSONL file (or one JSON array), compressed JSONL (.jsonl.gz,
    .jsonl.zst), a Parquet file, a folder written by datasets.Dataset.save_to_disk, a dataset
    repository folder (a README card with `configs`, `data/train-*.parquet`) or a Hugging Face Hub
    dataset id (`org/name`); a relative path resolves against the current directory, `~` is
    expanded, `$VAR` is not."""
    # How the rows are read: their format, and datasets by name (Hub ids, dataset folders).
    format: DatasetFormat | None = None
    """The rows' format (docs/your-model-your-data.md); detected from the first row when left
    out. ``messages``, ``preference``, ``kto``, ``prompt-messages`` and ``text`` are this engine's
    own; the others are the ecosystem's (ShareGPT, Alpaca, TRL's columns)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Columns to rename before the format is read, as ``{key the format reads: column in the
    data}``, e.g. ``{text: content}`` to pretrain on a ``content`` column."""
    name: str | None = None
    """Hub datasets and dataset folders: the config (subset) to load, ``load_dataset``'s
    ``name``."""
    split: str = "train"
    """Hub datasets and dataset folders: the split to read; slices such as ``train[:10%]`` or
    ``train[100:200]`` work."""
    revision: str | None = None
    """Hub datasets: the branch, tag or commit to load (the cache keeps what was loaded)."""
    data_files: str | list[str] | None = None
    """Hub datasets and dataset folders: the files to read (``load_dataset``'s ``data_files``)."""

    # Evaluation (docs/evaluating.md): the source's name in per-source metrics.
    label: str | None = Field(default=None, pattern=LABEL_PATTERN)
    """The source's name in per-source metrics (``eval_<label>_loss``) and the mixture table;
    default: the file stem (a stem already taken in the list gets `_2`, `_3`, ...). Two
    datasets of one list may not share a label."""


class WeightedDatasetDefinition(DatasetDefinition):
    """Define a dataset, with a weight for sampling."""

    sampling_weight: float = Field(default=1.0, allow_inf_nan=False)
    """Relative sampling weight; 0 leaves the dataset out, negative weights are errors."""


class ConcatenationDataInput(StrictModel):
    """A simple list of datasets, concatenated in order.

    SFT rows are ``{"messages": [{"role": ..., "content": ...}, ...]}``; DPO rows are
    ``{"prompt_messages": [...], "chosen_messages": [...], "rejected_messages": [...]}``.
    """

    type: Literal["CONCATENATION"]
    datasets: list[DatasetDefinition] = Field(min_length=1)
    """The datasets, in order."""
    data_type: str = "ChatConversation"
    """Generally, the data_type is automatically set based on the experiment config method."""

    @model_validator(mode="after")
    def _check_labels(self) -> ConcatenationDataInput:
        check_labels(self.datasets, "datasets")
        return self


class WeightedMixDataInput(StrictModel):
    """Datasets interleaved by sampling weight, precomputed as a list of row indices.

    With all weights equal to 1.0 the mix is a deterministic round robin over the datasets for as
    many rounds as the longest dataset has rows (shorter ones wrap around). Otherwise a seeded RNG
    draws which dataset gives the next row, until every dataset has been used up at least once;
    with small weights this can make the mix very large.
    """

    type: Literal["PRECOMPUTE_WEIGHTED_MIX"]
    datasets: list[WeightedDatasetDefinition] = Field(min_length=1)
    """The datasets with their sampling weights."""
    data_type: str = "ChatConversation"
    """Generally, the data_type is automatically set based on the experiment config method."""
    seed: int = 19851243
    """Seed for the random number generator for interleaving draws."""
    # Evaluation (docs/evaluating.md): what the weights are shares of.
    weight_by: Literal["rows", "tokens"] = "rows"
    """What the sampling weights are shares of: ``rows`` (each draw picks a row) or ``tokens``
    (the weights are shares of the training tokens: a source of long rows is drawn less
    often). A source too small for its share is repeated (its rows wrap around) and the
    repeats are counted in the preflight's mixture table."""

    @model_validator(mode="after")
    def _check_weights(self) -> WeightedMixDataInput:
        weights = [d.sampling_weight for d in self.datasets]
        if any(w < 0 for w in weights):
            raise ValueError(f"sampling weights must be >= 0, got {weights}")
        if sum(weights) <= 0:
            raise ValueError(f"at least one sampling weight must be > 0, got {weights}")
        check_labels(self.datasets, "training_data")
        return self


class AutoSplitDataInput(StrictModel):
    """Automatic validation split from the training data (after tokenisation and length handling)."""

    type: Literal["AUTO_SPLIT"]
    data_type: str = "ChatConversation"
    """Generally, the data_type is automatically set based on the experiment config method."""
    ratio: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Ratio of the training data to use for validation, in (0, 1)."""
    seed: int = 1289525893
    """Seed for the random number generator for splitting."""


class NoneDataInput(StrictModel):
    """A special type for not using data, e.g. no validation set."""

    type: Literal["NONE"]
    data_type: str = "ChatConversation"
    """Generally, the data_type is automatically set based on the experiment config method."""


TrainingDataInput = Annotated[
    ConcatenationDataInput | WeightedMixDataInput, Field(discriminator="type")
]
ValidationDataInput = Annotated[
    AutoSplitDataInput | ConcatenationDataInput | NoneDataInput, Field(discriminator="type")
]


class ChatTrainValidConfig(StrictModel):
    """Training time data configuration.

    Always defines the training data and can define validation data (``NONE`` for no validation).
    Also holds the chat template and padding settings, as those are part of the data pipeline.
    """

    training_data: TrainingDataInput
    """The training data: ``CONCATENATION`` or ``PRECOMPUTE_WEIGHTED_MIX``."""
    validation_data: ValidationDataInput = NoneDataInput(type="NONE")
    """The validation data: ``AUTO_SPLIT``, ``CONCATENATION`` or ``NONE``."""
    chat_template_name: ChatTemplateName = ChatTemplateName.MISTRAL_WITH_SYSTEM
    """The chat template that renders conversations (see docs/data.md). Tokens a named template
    needs and the tokenizer lacks are added, which grows the embeddings; where they cannot grow
    (QLoRA: a quantized base is not resized) or the model has unused reserved tokens, rename
    those to the template's markers with ``replace_tokens`` instead (same ids, no new rows)."""
    padding_side: Literal["right", "left"] = "right"
    """Padding side, right is usually right."""
    missing_pad_token_strategy: MissingPadTokenStrategy = MissingPadTokenStrategy.BOS_REPURPOSE
    """See the MissingPadTokenStrategy values for descriptions of the options."""
    history_rule: HistoryRule = HistoryRule.AUTO
    """keep-original: how conversations become training examples (see the HistoryRule values):
    ``auto`` trains a conversation whole where its template is prefix-preserving and one example
    per assistant turn otherwise, each exactly as the model sees it when generating that turn.
    The preflight says how many conversations each rule took and how many examples and tokens
    they gave. Named templates are prefix-preserving: they always train the whole conversation."""
    allow_unrendered_content: bool = False
    """keep-original: train rows whose tool calls, tools or reasoning the tokenizer's template
    does not render (they are left out of the text; the preflight warns and counts them). By
    default such a row is an error naming it and the templates that do render them."""
