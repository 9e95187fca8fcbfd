"""`finetuning score` refuses a model whose score head was never trained, before loading it."""

from __future__ import annotations

import pytest

from finetuning.cli import main
from finetuning.testing import synthetic_preferences, write_jsonl
from finetuning.tools import score


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(score, "load_for_inference", refuse)


@pytest.fixture(scope="module")
def lora_without_score(tmp_path_factory, tiny_llama):
    """A causal-LM LoRA adapter: it has no score weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("adapter") / "lora"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("with_adapter", [False, True])
def test_a_model_without_a_trained_score_head_is_refused(
    tmp_path, tiny_llama, lora_without_score, no_model, capsys, with_adapter
):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", synthetic_preferences(2))
    out = tmp_path / "scores.jsonl"
    adapter = ["--adapter", str(lora_without_score)] if with_adapter else []
    code = main(["score", "--model", str(tiny_llama), *adapter, "--input", str(pairs),
                 "--output", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    expected = "the adapter has no score head" if with_adapter else "LlamaForCausalLM"
    assert expected in err and "randomly initialised head" in err and "Traceback" not in err
    assert not out.exists()


def test_a_saved_sequence_classifier_passes_the_check(tmp_path, tiny_llama):
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "reward-model"
    AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=1).save_pretrained(
        folder
    )
    score.check_score_head(str(folder), None)  # does not raise
