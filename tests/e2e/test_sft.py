"""SFT end to end through the CLI on tiny local models (CPU)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from tests.helpers import (
    losses,
    minimal_sft,
    record_trainer_batches,
    run_main,
    summary,
    write_config,
)

pytestmark = pytest.mark.slow

LORA = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "peft_kwargs": {
        "r": 16, "lora_alpha": 32,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
}  # fmt: skip


def _train(tmp_path, config, name="c.yaml", method="sft"):
    result = run_main(method, write_config(tmp_path / name, config))
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_lora_keep_original(tmp_path, tiny_llama, chat_data):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    config = minimal_sft(tiny_llama, chat_data, peft_conf=LORA)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {
        "learning_rate": 1e-2, "num_train_epochs": 2, "logging_steps": 5, "save_strategy": "no",
        "output_dir": str(out),
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 8}
    _train(tmp_path, config)
    history = losses(out)
    assert history[-1] < history[0] - 0.4, history
    assert summary(out)["attention"] == ["per-example sdpa"]  # padding-free, no dense mask
    final = out / "checkpoint-final"
    assert (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()  # the adapter only
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.tensor([[1, 50, 60, 70]])
    base_logits = base(ids).logits
    tuned = PeftModel.from_pretrained(base, final)
    assert not torch.allclose(tuned(ids).logits, base_logits)
    tok_config = json.loads((final / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "</s>"  # keep-original keeps the tokenizer's EOS


def test_full_finetune_mistral_weighted_mix_auto_split(
    tmp_path, tiny_mistral, chat_data, chat_data_small
):
    out = tmp_path / "out"
    config = minimal_sft(tiny_mistral, chat_data)
    config["data_conf"] = {
        "training_data": {
            "type": "PRECOMPUTE_WEIGHTED_MIX",
            "datasets": [
                {"path": str(chat_data), "sampling_weight": 2.0},
                {"path": str(chat_data_small), "sampling_weight": 1.0},
            ],
        },
        "validation_data": {"type": "AUTO_SPLIT", "ratio": 0.1},
        "chat_template_name": "mistral-with-system",
    }
    config["training_args"] = {
        "learning_rate": 3e-3, "num_train_epochs": 1, "logging_steps": 5, "eval_strategy": "steps",
        "eval_steps": 0.5, "save_strategy": "no", "output_dir": str(out), "warmup_ratio": 0.05,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 4}
    result = _train(tmp_path, config)
    assert "batch: total 8 = 1 processes x 4 per device x 2 accumulation" in result.stderr
    history = losses(out)
    assert history[-1] < history[0] - 1.0, history
    evals = [h["eval_loss"] for h in summary(out)["history"] if "eval_loss" in h]
    assert len(evals) >= 2 and evals[-1] < evals[0]
    assert (out / "checkpoint-final" / "model.safetensors").is_file()
    assert (out / "resolved_config.yaml").is_file()


def test_chat_ml_lora_adds_tokens_and_saves_new_basemodel(tmp_path, tiny_llama, chat_data):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    config = minimal_sft(tiny_llama, chat_data, peft_conf=LORA)
    config["training_args"] = {
        "learning_rate": 1e-2, "num_train_epochs": 1, "logging_steps": 5, "save_strategy": "no",
        "output_dir": str(out),
    }  # fmt: skip
    _train(tmp_path, config)
    base_dir = out / "checkpoint-new-basemodel"
    final = out / "checkpoint-final"
    old_vocab = len(AutoTokenizer.from_pretrained(tiny_llama))
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert len(tokenizer) == old_vocab + 2
    assert tokenizer.eos_token == "<|im_end|>"  # generation stops at the end-of-turn marker
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert base.get_input_embeddings().weight.shape[0] == old_vocab + 2
    # The new rows were trained: the adapter's copy of the embeddings differs from the base.
    adapter = load_file(final / "adapter_model.safetensors")
    embed_key = next(k for k in adapter if "embed_tokens" in k and "modules_to_save" in k)
    new_ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    base_rows = base.get_input_embeddings().weight[new_ids]
    assert not torch.allclose(adapter[embed_key][new_ids], base_rows)
    model = PeftModel.from_pretrained(base, final)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "what color is the apple?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )  # fmt: skip
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in prompt["input_ids"][0].tolist()
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_completions_only_trains_only_assistant_spans(
    tmp_path, tiny_llama, chat_data_small, monkeypatch
):
    """Checked on the batches the trainer really sees."""
    from transformers import AutoTokenizer

    from finetuning.config.loading import load_config
    from finetuning.train.methods import sft

    seen = record_trainer_batches(monkeypatch)
    out = tmp_path / "out"
    config = minimal_sft(tiny_llama, chat_data_small)
    config["sft_args"]["train_on_completions_only"] = True
    config["training_args"] = {"max_steps": 3, "save_strategy": "no", "output_dir": str(out)}
    sft.run(load_config(write_config(tmp_path / "c.yaml", config), "sft"))
    tokenizer = AutoTokenizer.from_pretrained(out / "checkpoint-final")
    assert len(seen) == 3
    for batch in seen:
        ids, labels = batch["input_ids"][0].numpy(), batch["labels"][0].numpy()
        trained = (labels != -100).astype(int)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], trained, [0]])))
        runs = [tokenizer.decode(ids[a:b]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        assert len(runs) == len(batch["position_ids"][0].eq(0).nonzero())  # one per example
        for run in runs:
            assert run.startswith("<|im_start|>assistant\n"), run
            assert run.endswith("<|im_end|>"), run
            assert "user" not in run and "system" not in run


@pytest.mark.full
def test_pretrained_peft_continues_an_adapter(tmp_path, tiny_llama, chat_data):
    first, second = tmp_path / "first", tmp_path / "second"
    config = minimal_sft(tiny_llama, chat_data, peft_conf=LORA)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {
        "learning_rate": 1e-2, "num_train_epochs": 1, "logging_steps": 5, "save_strategy": "no",
        "output_dir": str(first), "seed": 3,
    }  # fmt: skip
    _train(tmp_path, config, "first.yaml")
    config["peft_conf"] = {
        "peft_type": "PRETRAINED_PEFT",
        "name_or_path": str(first / "checkpoint-final"),
    }
    config["training_args"]["output_dir"] = str(second)
    _train(tmp_path, config, "second.yaml")
    # The second run starts where the first ended, not from the base model.
    assert losses(second)[0] < losses(first)[0] - 0.2
    assert (second / "checkpoint-final" / "adapter_model.safetensors").is_file()


@pytest.mark.full
def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_llama, chat_data_small):
    def config_for(out):
        config = minimal_sft(tiny_llama, chat_data_small)
        config["training_args"] = {
            "learning_rate": 2e-3, "max_steps": 10, "logging_steps": 1, "save_strategy": "steps",
            "save_steps": 5, "output_dir": str(out), "seed": 7,
        }  # fmt: skip
        config["run_conf"]["resume_from_checkpoint"] = "auto"
        return config

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _train(tmp_path, config_for(straight), "a.yaml")
    _train(tmp_path, config_for(interrupted), "b.yaml")
    # Simulate an interruption after the first checkpoint: drop everything written after it.
    import shutil

    shutil.rmtree(interrupted / "checkpoint-10")
    shutil.rmtree(interrupted / "checkpoint-final")
    (interrupted / "run_summary.json").unlink()
    result = _train(tmp_path, config_for(interrupted), "b.yaml")
    assert "resuming from" in result.stderr and "checkpoint-5" in result.stderr
    resumed, reference = summary(interrupted), summary(straight)
    assert resumed["steps"] == reference["steps"] == 10
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-4)


def test_broken_data_fails_before_the_model_loads(tmp_path, tiny_llama):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{oops\n')
    config = minimal_sft(tiny_llama, bad)
    started = time.perf_counter()
    result = run_main("sft", write_config(tmp_path / "c.yaml", config))
    elapsed = time.perf_counter() - started
    assert result.returncode == 2
    assert f"{bad}:1: the conversation has no assistant turn" in result.stderr
    assert f"{bad}:2: invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Loading weights" not in result.stderr
    assert elapsed < 60
