"""SFT on image rows end to end (in-process CLI): both row conventions, SIGTERM, resume, then the
checkpoint loads in plain transformers + PEFT with its processor and answers about an image."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from finetuning.cli import main
from finetuning.testing import IMAGE_COLORS
from finetuning.train.safety.guards import EXIT_PREEMPTED
from tests.helpers import minimal_sft, sigterm_at_step, summary, write_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["gemma3", pytest.param("llava", marks=pytest.mark.full)])
def test_lora_on_image_rows_resumes_and_generates_from_an_image(
    tmp_path, monkeypatch, request, family, image_data, trl_image_data
):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = request.getfixturevalue(f"tiny_{family}")

    out = tmp_path / "out"
    config = minimal_sft(model_dir, image_data)
    config["data_conf"]["training_data"]["datasets"] = [
        {"path": str(image_data)},  # {"type": "image", "image": PATH} parts
        {"path": str(trl_image_data)},  # TRL's images column with placeholders
    ]
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["sft_args"] = {"max_seq_length": 128, "train_on_completions_only": True}
    config["peft_conf"] = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "peft_kwargs": {"r": 8}}
    config["training_args"] = {
        "learning_rate": 5e-3, "max_steps": 4, "save_steps": 2, "logging_steps": 1,
        "output_dir": str(out),
    }  # fmt: skip
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    path = write_config(tmp_path / "c.yaml", config)

    sigterm_at_step(monkeypatch, 2)
    assert main(["sft", str(path)]) == EXIT_PREEMPTED
    assert (out / "checkpoint-2" / "processor_config.json").is_file()
    monkeypatch.undo()
    assert main(["sft", str(path)]) == 0
    assert summary(out)["steps"] == 4
    preflight = (out / "data_preflight.txt").read_text()
    assert "images: 48 in 48 of 48 training rows" in preflight

    final = out / "checkpoint-final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert "vision_tower" in adapter["target_modules"]  # excluded by the default's regex
    processor = AutoProcessor.from_pretrained(final)
    base = AutoModelForImageTextToText.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(base, final).eval()
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and not any("vision_tower" in n or "projector" in n for n in lora)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "color?"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (40, 40), IMAGE_COLORS["red"])
    inputs = processor(text=[text], images=[[image]], return_tensors="pt", add_special_tokens=False)
    if family == "gemma3":  # the processor marks its image tokens, as training did
        assert int(inputs["token_type_ids"].sum()) == 4
    else:  # LLaVA: one <image> per patch
        image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
        assert int((inputs["input_ids"] == image_id).sum()) == 16
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
