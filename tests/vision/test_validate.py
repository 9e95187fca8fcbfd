"""`finetuning validate` on image rows: the preflight lines, the image marker, user errors."""

from __future__ import annotations

import json
import os
import re
import shutil

from PIL import Image

from tests.helpers import minimal_sft, run_main, write_config


def _config(model, data, template="keep-original"):
    config = minimal_sft(model, data)
    config["data_conf"]["chat_template_name"] = template
    config["sft_args"] = {"max_seq_length": 128, "train_on_completions_only": True}
    return config


def test_preflight_and_show_example_of_image_rows(tmp_path, tiny_gemma3, image_data):
    path = write_config(tmp_path / "c.yaml", _config(tiny_gemma3, image_data))
    result = run_main("validate", path, "--show-example", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stderr + result.stdout
    assert "images: 24 in 24 of 24 training rows (per row: min 1, median 1, max 1)" in out
    assert re.search(r"image tokens: 240 of \d+ tokens \(\d+\.\d%\), never trained", out)
    assert re.search(r"largest image: images/\w+-64x64.png .*64x64, resized to 32x32", out)
    assert "end-of-turn marker '<end_of_turn>' trained: yes" in out
    assert "batching: padded" in out
    example = out[out.index("example 0") :].split("\n", 1)[1]
    # one marker per image, with the size the vision tower sees and its tokens, never trained
    assert re.search(r"⟨image 1: 32x32, 10 tokens⟩what color is this\?<end_of_turn>", example)
    assert re.search(r"<start_of_turn>model\n⟦\w+\.<end_of_turn>\n⟧", example)
    assert example.index("⟨image") < example.index("⟦")


def test_image_rows_on_a_text_only_model_fail_before_it_loads(tmp_path, tiny_llama, image_data):
    path = write_config(tmp_path / "c.yaml", _config(tiny_llama, image_data))
    result = run_main("validate", path)
    assert result.returncode == 2
    assert "train.jsonl:1: this row has images, but run_conf.model is a text-only model" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_named_template_that_cannot_render_images_names_the_ones_that_can(
    tmp_path, tiny_gemma3, trl_image_data
):
    path = write_config(tmp_path / "c.yaml", _config(tiny_gemma3, trl_image_data, "chat-ml"))
    result = run_main("validate", path)
    assert result.returncode == 2
    assert "data_conf.chat_template_name: chat-ml cannot render images" in result.stderr
    assert "use a template that can (keep-original" in result.stderr


def test_changed_image_bytes_miss_the_cache(tmp_path, tiny_gemma3, image_data):
    folder = tmp_path / "data"
    shutil.copytree(image_data.parent, folder)
    path = write_config(tmp_path / "c.yaml", _config(tiny_gemma3, folder / "train.jsonl"))
    env = {**os.environ, "FINETUNING_CACHE_DIR": str(tmp_path / "cache")}

    def cache() -> str:
        result = run_main("validate", path, env=env)
        return re.search(r"\(cache (hit|miss)", result.stderr + result.stdout).group(1)

    assert [cache(), cache()] == ["miss", "hit"]
    image = next((folder / "images").iterdir())
    Image.new("RGB", Image.open(image).size, (1, 2, 3)).save(image)  # same path, new bytes
    assert cache() == "miss"


def test_rows_dropped_for_length_are_counted_with_their_images(tmp_path, tiny_gemma3, image_data):
    rows = [json.loads(line) for line in image_data.read_text().splitlines()]
    for row in rows[:5]:  # five rows made too long by their question
        row["messages"][-2]["content"][1]["text"] = "what color is this? " * 20
    data = image_data.parent / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _config(tiny_gemma3, data)
    config["sft_args"]["max_seq_length"] = 60
    result = run_main("validate", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stderr + result.stdout
    assert "rows dropped for length: 5, 5 of them with images (5 images)" in out
    assert "images: 19 in 19 of 19 training rows" in out


def test_processor_args_set_the_image_size(tmp_path, tiny_gemma3, image_data):
    config = _config(tiny_gemma3, image_data)
    config["run_conf"]["processor_args"] = {"size": {"height": 16, "width": 16}}
    path = write_config(tmp_path / "c.yaml", config)
    result = run_main("validate", path, "--show-example", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stderr + result.stdout
    assert "resized to 16x16 by Gemma3ImageProcessorPil" in out
    assert "⟨image 1: 16x16, 10 tokens⟩" in out


def test_image_rows_for_a_method_without_image_support_are_refused(tmp_path, tiny_gemma3):
    from finetuning.testing import synthetic_image_chats, write_jsonl

    rows = []
    for row in synthetic_image_chats(4, tmp_path):
        *prompt, answer = row["messages"]
        rows.append({"prompt_messages": prompt, "completion_messages": [answer], "label": True})
    config = _config(tiny_gemma3, write_jsonl(tmp_path / "kto.jsonl", rows))
    config.pop("sft_args")
    config["method"] = "kto"
    result = run_main("validate", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 2
    assert "kto.jsonl:1: image rows are supported for sft and dpo, not yet for kto" in (
        result.stderr
    )
