"""Every inference-ready folder stops generating at the end-of-turn token in plain transformers."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow

IM_END = "<|im_end|>"


def _prompt(tokenizer, question="what color is the apple?"):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )["input_ids"]  # fmt: skip


def _assert_ids_in_files(folder, end_id):
    for name in ("config.json", "generation_config.json"):
        data = json.loads((folder / name).read_text())
        eos = data["eos_token_id"]
        assert end_id in (eos if isinstance(eos, list) else [eos]), (name, eos)
        assert data["pad_token_id"] is not None, name


@pytest.mark.parametrize("folder", ["checkpoint-final", "checkpoint-60"])
def test_trained_full_checkpoint_stops_at_end_of_turn(trained_chatml, folder):
    """Greedy generation with nothing but AutoModelForCausalLM stops right after <|im_end|>."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = trained_chatml / folder
    tokenizer = AutoTokenizer.from_pretrained(path)
    end_id = tokenizer.convert_tokens_to_ids(IM_END)
    _assert_ids_in_files(path, end_id)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    prompt = _prompt(tokenizer)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=40, do_sample=False)
    new = out[0, prompt.shape[1] :].tolist()
    assert end_id in new, tokenizer.decode(new)
    # Stopped at the first end-of-turn token: nothing was generated after it.
    assert new.index(end_id) == len(new) - 1, tokenizer.decode(new)


class _ForceAt:
    """Forces ``token_id`` as the ``step``-th generated token (a model that has not learnt to stop)."""

    def __init__(self, prompt_len: int, step: int, token_id: int):
        self.at, self.token_id = prompt_len + step, token_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.at:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token_id] = 0.0
        return scores


def _stops_on_forced_end(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    tokenizer = AutoTokenizer.from_pretrained(path)
    end_id = tokenizer.convert_tokens_to_ids(IM_END)
    _assert_ids_in_files(path, end_id)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    prompt = _prompt(tokenizer)
    force = LogitsProcessorList([_ForceAt(prompt.shape[1], 3, end_id)])
    with torch.no_grad():
        out = model.generate(
            prompt, max_new_tokens=20, do_sample=False, logits_processor=force, min_new_tokens=0
        )
    new = out[0, prompt.shape[1] :].tolist()
    assert new[-1] == end_id and len(new) == 4, new


def test_new_basemodel_stops_at_end_of_turn(lora_new_tokens):
    _stops_on_forced_end(lora_new_tokens / "checkpoint-new-basemodel")


def test_merged_model_stops_at_end_of_turn(lora_new_tokens, tmp_path, tiny_llama):
    from finetuning.tools.merge_adapter import merge_and_save

    out = merge_and_save(
        str(tiny_llama), str(lora_new_tokens / "checkpoint-final"), tmp_path / "m", device_map="cpu"
    )
    _stops_on_forced_end(out)
    data = json.loads((out / "generation_config.json").read_text())
    # The base's own EOS still stops generation too.
    assert data["eos_token_id"][1:] == [
        json.loads((tiny_llama / "config.json").read_text())["eos_token_id"]
    ]


def test_write_stop_ids_keeps_other_fields(tmp_path):
    from finetuning.data.stop_tokens import write_stop_ids

    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2, "hidden_size": 8}))
    write_stop_ids(tmp_path, [7, 2], 0)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == {"eos_token_id": [7, 2], "hidden_size": 8, "pad_token_id": 0}
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [7, 2] and generation["pad_token_id"] == 0
    write_stop_ids(tmp_path / "adapter-only", [7], 0)  # no config.json: nothing written
    assert not (tmp_path / "adapter-only").exists()
