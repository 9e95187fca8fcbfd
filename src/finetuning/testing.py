"""Tiny local models, tokenizers and data for tests, the example scaffold and benchmarks.

Nothing here downloads anything: the tokenizer is trained in-process with the `tokenizers`
library (byte-level BPE with BOS/EOS/UNK and deliberately no pad token) and the model is a
randomly initialised Llama-, Mistral- or Qwen2-style causal LM, saved to a folder and loaded by
path exactly as a user's model would be.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

Architecture = Literal["llama", "mistral", "qwen2"]

#: The tiny tokenizer's own chat template (used by `keep-original`). It is deliberately not one
#: of the named templates, so tests see that keep-original really follows the tokenizer.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

#: A tool-aware template in the tiny tokenizer's style (for keep-original with tools and reasoning):
#: tools listed in the system turn, reasoning in <think>, calls as <call>NAME ARGUMENTS</call>.
TINY_TOOL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|system|>\n{% if messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] }}\n{% endif %}tools:{% for t in tools %}{{ '\\n' }}{{ t | tojson }}"
    "{% endfor %}{{ eos_token }}\n{% endif %}{% for message in messages %}"
    "{% if message['role'] == 'system' and tools and loop.first %}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{% if message.reasoning_content %}"
    "<think>{{ message.reasoning_content }}</think>\n{% endif %}{{ message.content or '' }}"
    "{% for call in message.tool_calls or [] %}<call>{{ call.function.name }} "
    "{% if call.function.arguments is string %}{{ call.function.arguments }}"
    "{% else %}{{ call.function.arguments | tojson }}{% endif %}</call>{% endfor %}"
    "{{ eos_token }}\n{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{{ eos_token }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n"
    "{% endif %}"
)

#: A reference chat-ml template with tools in the Hermes / Qwen2.5 convention, written out here
#: (never downloaded) so tests can compare our chat-ml rendering with it character for character.
#: Like Qwen2.5's own, it writes a default system prompt when the conversation has none.
CHATML_TOOLS_REFERENCE_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "I",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
    "make",
    "thing",
    "see",
    "him",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "go",
    "come",
    "did",
    "number",
    "sound",
    "no",
    "most",
    "people",
    "my",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "may",
    "down",
    "side",
    "been",
    "now",
    "find",
    "red",
    "green",
    "blue",
    "yellow",
    "black",
    "white",
    "apple",
    "banana",
    "cherry",
    "river",
    "mountain",
    "city",
    "capital",
    "answer",
    "question",
    "system",
    "user",
    "assistant",
    "hello",
    "thanks",
    "please",
    "sure",
    "okay",
]

_COLORS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
_FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"]
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _tokenizer_corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    corpus = []
    for _ in range(lines):
        corpus.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))))
    corpus += [" ".join(_COLORS + _FRUITS + _NUMBERS)] * 20
    corpus += ["<|user|>\n<|assistant|>\n<|system|>\n[INST] [/INST] <<SYS>> <</SYS>>"] * 20
    corpus += ["0123456789 + - = ? ! . , : ; ( ) [ ] { } < > / \\ ' \" # @ * & % $"] * 20
    return corpus


def build_tokenizer(out_dir: str | Path, vocab_size: int = 1024, chat_template: bool | str = True):
    """Train and save a byte-level BPE tokenizer with BOS/EOS/UNK and no pad token.

    Args:
        out_dir: Folder to save the tokenizer into.
        vocab_size: Target vocabulary size.
        chat_template: Whether to store :data:`TINY_CHAT_TEMPLATE` as the chat template, or
            the template to store (e.g. :data:`TINY_TOOL_CHAT_TEMPLATE`).

    Returns:
        The loaded ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    # Like Llama tokenizers: BOS is added when encoding with special tokens.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if chat_template:
        fast.chat_template = chat_template if isinstance(chat_template, str) else TINY_CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def build_model(
    out_dir: str | Path,
    architecture: Architecture = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int | None = None,
    seed: int = 0,
    tokenizer_kwargs: dict[str, Any] | None = None,
    intermediate_size: int | None = None,
    num_heads: int = 4,
) -> Path:
    """Build a tiny random causal LM with its tokenizer and save both to ``out_dir``.

    Args:
        out_dir: Folder to write (config, safetensors weights, tokenizer).
        architecture: "llama", "mistral" or "qwen2".
        hidden_size: Hidden size (64 keeps tests fast).
        num_layers: Number of decoder layers.
        vocab_size: Embedding rows; defaults to the tokenizer's size.
        seed: Seed of the random initialisation.
        tokenizer_kwargs: Extra arguments for :func:`build_tokenizer`.
        intermediate_size: MLP size; defaults to 2x hidden.
        num_heads: Attention heads (key/value heads are half of them).

    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    build_tokenizer(out_dir, **(tokenizer_kwargs or {}))
    config = AutoConfig.for_model(architecture)
    config.save_pretrained(out_dir)
    # Loaded the way users load it: some architectures pick their own tokenizer class.
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    config = AutoConfig.for_model(
        architecture,
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = None
    model.save_pretrained(out_dir)
    return out_dir


def synthetic_chats(n: int, seed: int = 0, system_share: float = 0.3) -> list[dict[str, Any]]:
    """Small, learnable chat conversations: the answer follows from the question.

    Returns:
        ``n`` rows in the SFT format ``{"messages": [...]}``.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            fruit = rng.choice(_FRUITS)
            color = _COLORS[_FRUITS.index(fruit)]
            q, a = f"what color is the {fruit}?", f"the {fruit} is {color}."
        elif kind == 1:
            a_, b_ = rng.randrange(5), rng.randrange(5)
            q, a = (
                f"add {_NUMBERS[a_]} and {_NUMBERS[b_]}.",
                f"{_NUMBERS[a_]} plus {_NUMBERS[b_]} is {_NUMBERS[a_ + b_]}.",
            )
        else:
            words = [rng.choice(_COLORS) for _ in range(3)]
            q, a = f"repeat: {' '.join(words)}", " ".join(words)
        messages = []
        if rng.random() < system_share:
            messages.append({"role": "system", "content": "you are a helpful assistant."})
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": messages})
    return rows


#: The function schema of :func:`synthetic_tool_chats`.
COLOR_TOOL = {
    "type": "function",
    "function": {
        "name": "get_color",
        "description": "The color of a fruit.",
        "parameters": {
            "type": "object",
            "properties": {"fruit": {"type": "string"}},
            "required": ["fruit"],
        },
    },
}


def synthetic_tool_chats(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Learnable agent conversations: reasoning, a tool call, its result, then the answer.

    Returns:
        ``n`` rows ``{"messages": [...], "tools": [COLOR_TOOL]}``; every other row has reasoning
        and every third gives the arguments as a JSON string.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        fruit = rng.choice(_FRUITS)
        color = _COLORS[_FRUITS.index(fruit)]
        arguments: Any = {"fruit": fruit}
        if i % 3 == 2:
            arguments = json.dumps(arguments)
        call = {"type": "function", "function": {"name": "get_color", "arguments": arguments}}
        first: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [call]}
        if i % 2:
            first["reasoning_content"] = f"the user asks about the {fruit}."
        messages = [
            {"role": "user", "content": f"what color is the {fruit}?"},
            first,
            {"role": "tool", "name": "get_color", "content": color},
            {"role": "assistant", "content": f"the {fruit} is {color}."},
        ]
        rows.append({"messages": messages, "tools": [COLOR_TOOL]})
    return rows


def synthetic_preferences(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Preference rows: the chosen answer is the correct one, the rejected one is wrong."""
    rng = random.Random(seed)
    rows = []
    for row in synthetic_chats(n, seed):
        *prompt, answer = row["messages"]
        wrong = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + "."
        rows.append(
            {
                "prompt_messages": prompt,
                "chosen_messages": [answer],
                "rejected_messages": [{"role": "assistant", "content": wrong}],
            }
        )
    return rows


def synthetic_arithmetic(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """GRPO prompt rows: a one-digit sum to answer in ``\\boxed{}``, with its ``answer``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        question = f"What is {a} + {b}? Give the answer as \\boxed{{N}}."
        rows.append(
            {"prompt_messages": [{"role": "user", "content": question}], "answer": str(a + b)}
        )
    return rows


def synthetic_feedback(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Unpaired feedback rows (KTO): the correct answer desirable, a wrong one undesirable.

    About two thirds of the rows are desirable, so the desirable/undesirable balance is uneven
    as real thumbs-up/thumbs-down data is.
    """
    rng = random.Random(seed + 7)
    rows = []
    for row in synthetic_preferences(n, seed):
        desirable = rng.random() < 2 / 3
        key = "chosen_messages" if desirable else "rejected_messages"
        rows.append(
            {
                "prompt_messages": row["prompt_messages"],
                "completion_messages": row[key],
                "label": desirable,
            }
        )
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def synthetic_documents(n: int, seed: int = 0, long_share: float = 0.25) -> list[dict[str, Any]]:
    """Raw-text documents for continued pretraining, learnable and of mixed lengths.

    Returns:
        ``n`` rows ``{"text": ...}``: sentences about fruit colors and sums; about
        ``long_share`` of them are several times longer than the rest.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(6, 10) if rng.random() < long_share else rng.randint(1, 3)):
            fruit = rng.choice(_FRUITS)
            a, b = rng.randrange(5), rng.randrange(5)
            sentences.append(
                f"the {fruit} is {_COLORS[_FRUITS.index(fruit)]}. "
                f"{_NUMBERS[a]} plus {_NUMBERS[b]} is {_NUMBERS[a + b]}."
            )
        rows.append({"text": " ".join(sentences)})
    return rows


#: A Gemma 3 style chat template written out here (never downloaded): BOS, turns between
#: ``<start_of_turn>`` and ``<end_of_turn>``, the assistant's role written ``model``, the system
#: turn folded into the first user turn, and ``<start_of_image>`` for each image part.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set c = messages[0]['content'] -%}"
    "{%- set first = c if c is string else (c | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join('')) -%}"
    "{%- set prefix = first + '\\n\\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n' }}"
    "{%- if loop.first -%}{{ prefix }}{%- endif -%}"
    "{%- if m['content'] is string -%}{{ m['content'] | trim }}"
    "{%- else -%}{%- for part in m['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
GEMMA3_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}


def build_gemma3_model(
    out_dir: str | Path, image_size: int = 32, tokens_per_image: int = 4, seed: int = 0
) -> Path:
    """Build a tiny random Gemma 3 vision-language model with its processor in ``out_dir``.

    The processor is Gemma 3's own (``Gemma3Processor`` with the Pillow image processor, so no
    torchvision is needed), over the tiny BPE tokenizer with Gemma 3's turn and image tokens.

    Args:
        out_dir: Folder to write (config, weights, tokenizer, processor, chat template).
        image_size: The vision tower's input size (images are resized to it).
        tokens_per_image: Image tokens each image expands to (a square number).
        seed: Seed of the random initialisation.
    """
    import torch
    from transformers import AutoTokenizer, Gemma3Config, Gemma3ForConditionalGeneration
    from transformers.models.gemma3 import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(out_dir, chat_template=False)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>", *GEMMA3_TOKENS.values()]}
    )
    # As in instruction-tuned checkpoints, generation ends at the end of the model's turn.
    tokenizer.eos_token = "<end_of_turn>"
    tokenizer.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir, extra_special_tokens=GEMMA3_TOKENS)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=tokens_per_image,
    )
    processor.save_pretrained(out_dir)
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "sliding_window": 64,
            "layer_types": ["sliding_attention", "full_attention"],
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": None,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": image_size // 4,
        },
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = None
    model.save_pretrained(out_dir)
    return out_dir


#: A LLaVA 1.5 style chat template (``USER: <image>\n... ASSISTANT: ...</s>``), written out here.
LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() + ': ' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT: ' }}{% endif %}"
)


def build_llava_model(out_dir: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """Build a tiny random LLaVA (CLIP vision tower, Llama decoder) with its processor.

    The processor is ``LlavaProcessor`` with CLIP's Pillow image processor (no torchvision);
    each image expands to one ``<image>`` token per patch (16 for the default 32 px, patch 8).
    """
    import torch
    from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava import LlavaProcessor

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(out_dir, chat_template=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    size = {"height": image_size, "width": image_size}
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size=size),
        tokenizer=tokenizer,
        chat_template=LLAVA_CHAT_TEMPLATE,
        patch_size=image_size // 4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
    )
    processor.save_pretrained(out_dir)
    config = LlavaConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": image_size // 4,
            "projection_dim": 32,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = None
    model.save_pretrained(out_dir)
    return out_dir


#: The colors of :func:`synthetic_image_chats` and their RGB values.
IMAGE_COLORS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def synthetic_image_chats(
    n: int, folder: str | Path, convention: str = "parts", seed: int = 0
) -> list[dict[str, Any]]:
    """Learnable image chats: the answer names the color of a plain image (needs Pillow).

    Args:
        n: Rows.
        folder: Where the images go (``images/red.png`` ...); paths in the rows are relative
            to it, so write the data file there.
        convention: "parts" (``{"type": "image", "image": PATH}``) or "trl" (an ``images``
            column with ``{"type": "image"}`` placeholders).
        seed: Seed of the choice of colors and sizes.
    """
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        color = rng.choice(sorted(IMAGE_COLORS))
        size = (rng.choice([24, 40, 64]), rng.choice([24, 40, 64]))
        name = f"images/{color}-{size[0]}x{size[1]}.png"
        if not (folder / name).exists():
            Image.new("RGB", size, IMAGE_COLORS[color]).save(folder / name)
        image: dict[str, Any] = {"type": "image"}
        if convention == "parts":
            image["image"] = name
        messages = []
        if i % 3 == 0:
            messages.append({"role": "system", "content": "answer with one word."})
        messages += [
            {"role": "user", "content": [image, {"type": "text", "text": "what color is this?"}]},
            {"role": "assistant", "content": f"{color}."},
        ]
        row: dict[str, Any] = {"messages": messages}
        if convention == "trl":
            row["images"] = [name]
        rows.append(row)
    return rows
