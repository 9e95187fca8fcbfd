"""Generation with a trained checkpoint: batched from files, interactively, or from a generate config.

Prompts are rendered with the chat template stored in the saved tokenizer, and generation stops
at the tokenizer's EOS, which our saved tokenizers set to the template's end-of-turn marker.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from finetuning.data.encode import needs_special_prefix
from finetuning.data.messages import check_messages, check_tools, tool_name
from finetuning.data.rows import MAX_REPORTED, read_records
from finetuning.errors import Problem, UserError
from finetuning.tools import vision_generate
from finetuning.tools.inference import load_for_inference
from finetuning.tools.tool_calls import describe_calls, parse_answer, read_tools
from finetuning.train.safety.writes import atomic_writer

logger = logging.getLogger(__name__)


def generation_kwargs(tokenizer: Any, params: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults (greedy, 256 new tokens, stop at the end-of-turn EOS) updated with ``params``."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": 256,
        "do_sample": False,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    kwargs.update(params or {})
    return kwargs


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list | None = None) -> str:
    """The prompt text for ``messages`` (the tokenizer's chat template, with the generation prompt).

    ``tools`` (function schemas) are rendered as training rendered them: our saved templates
    list them in the system turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template: use a checkpoint saved by finetuning")
    from finetuning.data.history import missing_tools

    extra = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **extra
    )
    if missing := missing_tools(text, tools):
        # A template that ignores `tools` gives a prompt without the schemas: the model would
        # answer (tool_calls: []) without ever seeing them.
        raise UserError(
            f"the tokenizer's chat template does not render tools: the prompt holds no schema "
            f"for {', '.join(missing)}. Use a checkpoint whose template renders tools "
            "(finetuning saves chat-ml and simplified-llama31 that way), or leave out --tools "
            "and the rows' `tools`"
        )
    return text


def generate_batch(
    model: Any, tokenizer: Any, prompts: list[str], params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Generate for a batch of prompt texts (left-padded); returns answer text and token ids."""
    import torch

    tokenizer.padding_side = "left"
    add_special = any(needs_special_prefix(tokenizer, p) for p in prompts)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.no_grad():
        output = model.generate(**batch, **generation_kwargs(tokenizer, params))
    results = []
    for row in output[:, batch["input_ids"].shape[1] :]:
        ids = row.tolist()
        stop = tokenizer.eos_token_id
        stopped = stop in ids
        if stopped:
            ids = ids[: ids.index(stop) + 1]
        ids = [i for i in ids if i != tokenizer.pad_token_id or i == stop]
        results.append(
            {
                "answer": tokenizer.decode(ids, skip_special_tokens=True).strip(),
                "token_ids": ids,
                "stopped_at_end_of_turn": stopped,
            }
        )
    return results


def _check_messages(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    """``value`` checked as training checks a row's messages (``data/messages.check_messages``).

    Raises:
        UserError: What the training data check finds, located at the row.
    """
    if problem := check_messages(value, key):
        raise UserError(Problem(problem, where))
    return value


def _prompt_messages(row: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(row, dict):
        raise UserError(
            f"{where}: a row must be a JSON object with `messages` or `prompt_messages`, "
            f"not a {type(row).__name__}"
        )
    if row.get("tools") is not None and (problem := check_tools(row["tools"])):
        raise UserError(Problem(problem, where))  # e.g. a JSON string instead of a list
    if "prompt_messages" in row:
        return _check_messages(row["prompt_messages"], "prompt_messages", where)
    if "messages" not in row:
        raise UserError(f"{where}: a row needs `prompt_messages` or `messages`")
    messages = _check_messages(row["messages"], "messages", where)
    # A conversation ending with the reference answer is prompted up to its last user turn.
    while messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    if not messages:
        raise UserError(f"{where}: `messages` has only assistant turns: there is no prompt")
    return messages


def generate_file(
    model: Any,
    tokenizer: Any,
    rows: Iterable[tuple[str, dict]],
    out: TextIO,
    params=None,
    batch_size=8,
    tools: list | None = None,
) -> int:
    """Generate for JSONL rows and write one JSON answer record per row; returns the count.

    With tools (a row's own ``tools``, else ``tools``) the record also has the answer's
    ``tool_calls`` (structured, possibly empty) and its ``reasoning_content`` when there is one.
    """
    pending: list[tuple[str, dict, list]] = []
    count = 0

    def flush() -> None:
        nonlocal count
        texts = [
            render_prompt(tokenizer, messages, row.get("tools") or tools)
            for _, row, messages in pending
        ]
        for (where, row, messages), result in zip(
            pending, generate_batch(model, tokenizer, texts, params), strict=True
        ):
            record = {"id": row.get("id", where), "messages": messages, "answer": result["answer"]}
            if row.get("tools") or tools:
                parsed = parse_answer(result["answer"])
                record["tool_calls"] = parsed.get("tool_calls", [])
                if "reasoning_content" in parsed:
                    record["reasoning_content"] = parsed["reasoning_content"]
            record["stopped_at_end_of_turn"] = result["stopped_at_end_of_turn"]
            out.write(json.dumps(record) + "\n")
            count += 1
        pending.clear()

    for where, row in rows:
        pending.append((where, row, _prompt_messages(row, where)))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return count


def _read_jsonl(path: Path, key: str = "--input") -> list[tuple[str, dict]]:
    """All rows of a JSONL prompts file, each checked, before anything is generated or written.

    Returns:
        (``file:line``, row) of each row.

    Raises:
        UserError: The file is missing or not text, or rows are not valid JSON objects with a
            prompt (with the same located errors as training data).
    """
    problems, rows = [], []
    for line, record in read_records(path, key):
        where = f"{path}:{line}"
        if isinstance(record, Problem):
            problems.append(record)
        elif not isinstance(record, dict):
            problems.append(
                Problem(f"a row must be a JSON object, got {type(record).__name__}", where)
            )
        else:
            rows.append((where, record))
    if problems:
        more = " (showing the first 20)" if len(problems) > MAX_REPORTED else ""
        raise UserError(problems[:MAX_REPORTED], header=f"{path} has malformed rows{more}:")
    for where, row in rows:
        _prompt_messages(row, where)
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows


def _check_outputs(inputs: list[Path], output: Path) -> None:
    """Refuse an output that is one of the inputs (it would be emptied before it is read)."""
    for source in inputs:
        if source.resolve() == output.resolve() or (
            source.exists() and output.exists() and source.samefile(output)
        ):
            raise UserError(
                f"the output {output} is the input file: that would overwrite the prompts; "
                "choose another output path"
            )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _decoded_lines(stdin: Any, stdout: TextIO) -> Iterable[str]:
    """Lines of ``stdin`` (text, or bytes decoded as UTF-8; an undecodable line is skipped)."""
    while True:
        line = stdin.readline()
        if not line:
            return
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                stdout.write(f"(that line is not valid UTF-8 at byte {exc.start}; ignored)\n")
                stdout.write("> ")
                stdout.flush()
                continue
        yield line


def chat(
    model: Any, tokenizer: Any, stdin: TextIO, stdout: TextIO, params=None, tools=None
) -> None:
    """An interactive chat: each line is a user turn; the answer streams as it is generated.

    ``/reset`` starts a new conversation, ``/exit`` (or end of input) quits. With ``tools``
    (function schemas) the model may call them: each call is printed as
    ``tool call: NAME {arguments}``, and ``/tool RESULT`` answers the call with its result.
    """
    import torch
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            stdout.write(text + ("\n" if stream_end else ""))
            stdout.flush()

    history: list[dict[str, Any]] = []
    stdout.write("chat: type a message; /reset clears the conversation, /exit quits\n")
    if tools:
        names = ", ".join(str(tool_name(t)) for t in tools)
        stdout.write(f"tools: {names}; answer a tool call with /tool RESULT\n")
    lines = iter(_decoded_lines(stdin, stdout))
    while True:
        stdout.write("> ")
        stdout.flush()
        line = next(lines, "")
        if not line or line.strip() == "/exit":
            break
        if line.strip() == "/reset":
            history = []
            continue
        if line.startswith("/tool ") and tools:
            last = history[-1] if history else {}
            if not (last.get("tool_calls") or last.get("role") == "tool"):
                stdout.write("(no tool call to answer)\n")
                continue
            history.append({"role": "tool", "content": line[len("/tool ") :].rstrip("\n")})
        else:
            history.append({"role": "user", "content": line.rstrip("\n")})
        prompt = render_prompt(tokenizer, history, tools)
        batch = tokenizer(
            prompt, return_tensors="pt", add_special_tokens=needs_special_prefix(tokenizer, prompt)
        )
        batch = {k: v.to(model.device) for k, v in batch.items()}
        streamer = _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        with torch.no_grad():
            output = model.generate(
                **batch, streamer=streamer, **generation_kwargs(tokenizer, params)
            )
        answer = tokenizer.decode(
            output[0, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )
        if tools:
            message = parse_answer(answer)
            stdout.write(describe_calls(message))
            history.append(message)
        else:
            history.append({"role": "assistant", "content": answer.strip()})


def generate_from_config(config_path: str | Path, outpath: str | Path) -> Path:
    """The established engine's ``generate CONFIG OUTPUT.yaml``: YAML answer records."""
    import yaml

    from finetuning.config.generation import GenerationConfig
    from finetuning.config.loading import read_yaml, validate_file_data
    from finetuning.model.loading import load_kwargs

    data, root = read_yaml(Path(config_path))
    conf = validate_file_data(GenerationConfig, data, Path(config_path), root, "generate config")
    mc = conf.model_conf
    prompt = conf.prompt_conf
    out = Path(outpath)
    # Every input is read and checked before the model loads and before the output is touched.
    rows = []
    if prompt.type != "open-input":
        _check_outputs([Path(prompt.data.path), Path(config_path)], out)
        rows = _read_jsonl(Path(prompt.data.path), "prompt_conf.data.path")
    else:
        _check_outputs([Path(config_path)], out)
    kwargs = load_kwargs(mc.model_args, conf.quant_conf, key="model_conf.model_args")
    model, tok = load_for_inference(mc.model, mc.adapter, mc.tokenizer, kwargs)
    params = dict(conf.hf_gen_params)
    if prompt.type == "open-input":
        items = [
            (str(i), prompt.input, "_open_prompt_data_", "") for i in range(prompt.num_samples)
        ]
    else:
        items = []
        for i, (where, row) in enumerate(rows):
            messages = _prompt_messages(row, where)
            reference = (row.get("chosen_messages") or row.get("messages") or [{}])[-1].get(
                "content", ""
            )
            text = render_prompt(tok, messages, row.get("tools"))
            items.append((row.get("id", str(i)), text, row.get("dataset", "unknown"), reference))
    records = []
    for id_, text, dataset, reference in items:
        (result,) = generate_batch(model, tok, [text], params)
        records.append(
            {
                "dataset": dataset,
                "id": id_,
                "prompt": text,
                "answer": result["answer"],
                "correct_answers": [reference],
                "test_type": "open-ended",
                "data_collection": dataset,
                "truncated": False,
                "all_text_raw": text + tok.decode(result["token_ids"]),
                "gen_params": {
                    **generation_kwargs(tok, params),
                    "model_conf": mc.model_dump(mode="json", exclude_unset=True),
                    "quant_conf": conf.quant_conf.model_dump(mode="json"),
                },
            }
        )
    text = yaml.safe_dump(records, sort_keys=False, allow_unicode=True)
    with atomic_writer(out) as f:
        f.write(text)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`finetuning generate`: a generate config, or a model with JSONL in and out."""
    parser.add_argument(
        "config", nargs="?", help="a generate config (model_conf, prompt_conf, ...)"
    )
    parser.add_argument("outpath", nargs="?", help="with a config: where to write the YAML records")
    parser.add_argument("--model", help="model path (with --input/--output instead of a config)")
    parser.add_argument("--adapter", default=None, help="adapter path")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer path (default: adapter's or model's)"
    )
    parser.add_argument(
        "--input", type=Path, help="JSONL of conversations (messages or prompt_messages)"
    )
    parser.add_argument("--output", type=Path, help="JSONL of answers to write")
    parser.add_argument(
        "--tools",
        type=Path,
        default=None,
        help="JSON file of function schemas the model may call (for rows without their own)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)


def run(args: argparse.Namespace) -> int:
    if args.model:
        if not (args.input and args.output):
            raise UserError("generate --model needs --input IN.jsonl and --output OUT.jsonl")
        _check_positive(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        _check_outputs([args.input], args.output)
        if source := vision_generate.processor_source(args):  # image parts in the rows
            return vision_generate.generate_file(args, source)
        rows = _read_jsonl(args.input)  # all of it, checked, before the output is touched
        tools = read_tools(args.tools)
        model, tok = load_for_inference(args.model, args.adapter, args.tokenizer)
        with atomic_writer(args.output) as out:
            count = generate_file(
                model,
                tok,
                rows,
                out,
                {"max_new_tokens": args.max_new_tokens},
                args.batch_size,
                tools=tools,
            )
        print(f"wrote {count} answers to {args.output}", file=sys.stderr)
        return 0
    if not (args.config and args.outpath):
        raise UserError("generate needs CONFIG OUTPUT.yaml, or --model with --input and --output")
    print(f"wrote {generate_from_config(args.config, args.outpath)}", file=sys.stderr)
    return 0


def run_chat(args: argparse.Namespace) -> int:
    _check_positive(max_new_tokens=args.max_new_tokens)
    tools = read_tools(args.tools)
    source = vision_generate.processor_source(args)
    if getattr(args, "image", None) and source is None:
        raise UserError(f"--image: {args.model} has no processor (it is not a vision checkpoint)")
    if source is not None and getattr(args, "image", None):
        return vision_generate.chat(args, source, sys.stdin, sys.stdout)
    model, tok = load_for_inference(args.model, args.adapter, args.tokenizer)
    # Bytes, decoded line by line: one undecodable line is skipped instead of ending the chat.
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    chat(model, tok, stdin, sys.stdout, {"max_new_tokens": args.max_new_tokens}, tools)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``generate CONFIG OUTPUT.yaml`` (the established engine's interface)."""
    from finetuning.console import run_tool

    parser = argparse.ArgumentParser(prog="generate", description="Generate with a trained model.")
    add_arguments(parser)
    return run_tool(lambda: run(parser.parse_args(argv)))
