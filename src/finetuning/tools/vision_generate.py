"""Generating with a vision-language checkpoint: image parts in `generate` rows, `chat --image`.

A checkpoint saved by a vision run carries its processor; prompts are rendered with the
processor's chat template and encoded by the processor with their images, as in training. Image
sources follow the training rows' rules (relative to the input file, absolute, ``file://``, base64
data URIs, TRL's ``images`` column), checked before the model loads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from finetuning.data.images import ROW_KEY, attach
from finetuning.data.messages import check_messages
from finetuning.data.processor import has_processor
from finetuning.data.vision import template_messages
from finetuning.errors import Problem, UserError


def processor_source(args: Any) -> str | None:
    """The folder whose processor a tool uses, when the checkpoint has one (else None)."""
    for source in (args.tokenizer, args.adapter, args.model):
        if source and has_processor(source):
            return source
    return None


def load(args: Any, source: str) -> tuple[Any, Any]:
    """(model, processor) of a vision-language checkpoint."""
    from transformers import AutoProcessor

    from finetuning.tools.inference import load_for_inference

    model, _ = load_for_inference(args.model, args.adapter, args.tokenizer)
    return model, AutoProcessor.from_pretrained(source)


def read_rows(path: Path) -> list[tuple[str, list[dict[str, Any]], list[Any]]]:
    """(where, prompt messages, images) of each row of a JSONL prompts file, all checked.

    Raises:
        UserError: Malformed rows or images that are missing or do not decode (located).
    """
    from finetuning.data.rows import read_records

    problems, rows = [], []
    for line, record in read_records(path, "--input"):
        where = f"{path}:{line}"
        if isinstance(record, Problem):
            problems.append(record)
            continue
        key = (
            "prompt_messages"
            if isinstance(record, dict) and "prompt_messages" in record
            else "messages"
        )
        problem = (
            check_messages(record.get(key), key)
            if isinstance(record, dict)
            else "a row must be a JSON object"
        )
        problem = problem or attach(record, path.parent)
        if problem:
            problems.append(Problem(problem, where))
            continue
        messages = list(record[key])
        while messages and messages[-1]["role"] == "assistant":  # prompt up to the answer
            messages.pop()
        if not messages:
            problems.append(Problem(f"`{key}` has only assistant turns: there is no prompt", where))
            continue
        rows.append((where, messages, record.get(ROW_KEY) or []))
    if problems:
        raise UserError(problems[:20], header=f"{path} has malformed rows:")
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows


def answer(model: Any, processor: Any, messages: list[dict[str, Any]], images: list[Any], params):
    """Generate one answer (greedy by default) for messages with their (opened) images."""
    import torch

    tokenizer = processor.tokenizer
    text = processor.apply_chat_template(template_messages(messages), add_generation_prompt=True)
    add_special = not (tokenizer.bos_token and text.startswith(tokenizer.bos_token))
    inputs = processor(
        text=[text],
        images=[images] if images else None,
        return_tensors="pt",
        add_special_tokens=add_special,
    ).to(model.device)
    kwargs = {"max_new_tokens": 256, "do_sample": False, "eos_token_id": tokenizer.eos_token_id}
    kwargs["pad_token_id"] = tokenizer.pad_token_id or tokenizer.eos_token_id
    kwargs.update(params or {})
    with torch.no_grad():
        output = model.generate(**inputs, **kwargs)
    ids = output[0, inputs["input_ids"].shape[1] :].tolist()
    stopped = tokenizer.eos_token_id in ids
    if stopped:
        ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
    return tokenizer.decode(ids, skip_special_tokens=True).strip(), stopped


def generate_file(args: Any, source: str) -> int:
    """`generate --model M --input IN --output OUT` for a vision-language checkpoint."""
    rows = read_rows(args.input)  # every image checked before the model loads
    model, processor = load(args, source)
    params = {"max_new_tokens": args.max_new_tokens}
    records = []
    for where, messages, refs in rows:
        text, stopped = answer(model, processor, messages, [r.open() for r in refs], params)
        records.append(
            {"id": where, "messages": messages, "answer": text, "stopped_at_end_of_turn": stopped}
        )
    args.output.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {len(records)} answers to {args.output}", file=sys.stderr)
    return 0


def chat(args: Any, source: str, stdin: TextIO, stdout: TextIO) -> int:
    """`chat --image PATH`: the image goes with the first user turn; ``/reset`` keeps it."""
    from finetuning.data.images import check_row_images

    image = {"type": "image", "image": str(Path(args.image).resolve())}
    refs, problem = check_row_images({"messages": [{"content": [image]}]}, Path.cwd())
    if problem:
        raise UserError(f"--image: {problem.split(': ', 1)[-1]}")
    model, processor = load(args, source)
    images = [refs[0].open()]
    history: list[dict[str, Any]] = []
    stdout.write(f"chat about {args.image}: type a message; /reset, /exit\n")
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        if line.strip() == "/reset":
            history = []
            continue
        content: Any = line.rstrip("\n")
        if not history:
            content = [{"type": "image"}, {"type": "text", "text": content}]
        history.append({"role": "user", "content": content})
        text, _ = answer(model, processor, history, images, {"max_new_tokens": args.max_new_tokens})
        stdout.write(text + "\n")
        history.append({"role": "assistant", "content": text})
