"""Tools on a vision-language checkpoint: merge-adapter, generate with image parts, chat --image."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from finetuning.testing import write_jsonl
from tests.helpers import run_main


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_gemma3):
    """A random LoRA adapter on the tiny Gemma 3, saved with the processor as training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from finetuning.model.vision import lora_targets

    folder = tmp_path_factory.mktemp("adapter")
    model = AutoModelForImageTextToText.from_pretrained(tiny_gemma3)
    targets = lora_targets(model, train_vision=False)
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=targets, init_lora_weights=False)
    )
    peft_model.save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny_gemma3).save_pretrained(folder)
    return folder


def _inputs(processor, color=(200, 10, 10)):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (30, 30), color)
    return processor(text=[text], images=[[image]], return_tensors="pt", add_special_tokens=False)


def test_merge_adapter_saves_a_vision_model_with_its_processor(tmp_path, tiny_gemma3, adapter):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "merged"
    result = run_main("merge-adapter", tiny_gemma3, adapter, out, "--device-map", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    processor = AutoProcessor.from_pretrained(out)
    merged = AutoModelForImageTextToText.from_pretrained(out).eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_gemma3)
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    inputs = _inputs(processor)
    with torch.no_grad():
        expected = peft_model(**inputs).logits
        got = merged(**inputs).logits
    assert torch.allclose(expected, got, atol=1e-4)
    with torch.no_grad():
        plain = AutoModelForImageTextToText.from_pretrained(tiny_gemma3).eval()(**inputs).logits
    assert not torch.allclose(plain, got, atol=1e-4)  # the adapter changed something


def test_generate_reads_image_parts_and_checks_them_first(tmp_path, tiny_gemma3, adapter):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "img" / "b.png")
    part = {"type": "image", "image": "img/b.png"}
    rows = [
        {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "color?"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image"}]}], "images": ["img/b.png"]},
    ]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["generate", "--model", tiny_gemma3, "--adapter", adapter, "--input", data]
    result = run_main(*args, "--output", tmp_path / "out.jsonl", "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == [f"{data}:1", f"{data}:2"]
    assert all(isinstance(a["answer"], str) for a in answers)

    rows[1]["images"] = ["img/missing.png"]
    write_jsonl(data, rows)
    result = run_main(*args, "--output", tmp_path / "out2.jsonl")
    assert result.returncode == 2
    assert f"{data}:2: images[0]: image img/missing.png not found" in result.stderr
    assert "Loading weights" not in result.stderr  # refused before the model loaded


def test_chat_about_an_image(tmp_path, tiny_gemma3, adapter, monkeypatch):
    image = tmp_path / "red.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(image)
    monkeypatch.setattr("sys.stdin", io.StringIO("what color?\nand now?\n/exit\n"))
    result = run_main(
        "chat", tiny_gemma3, "--adapter", adapter, "--image", image, "--max-new-tokens", "3"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"chat about {image}")
    assert result.stdout.count("> ") == 3  # two answered turns, then /exit
    missing = run_main("chat", tiny_gemma3, "--adapter", adapter, "--image", tmp_path / "no.png")
    assert missing.returncode == 2 and "--image: image" in missing.stderr
