"""The Jinja chat templates stored in saved tokenizers, equal to what the named templates render.

Training renders with our own code (which records the spans); inference renders with these, so
they must write the same string for every conversation, tool calls and reasoning included (tests
compare them character for character).
"""

from __future__ import annotations

#: The Hermes / Qwen2.5 tool preamble of chat-ml, around the tool schemas (one JSON per line).
CHATML_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
CHATML_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
#: Llama 3.1's system-turn instructions for JSON tool calls (before the schemas, indent 4).
LLAMA31_TOOLS_INTRO = (
    "Environment: ipython\n\nYou have access to the following functions. To call a function, "
    'please respond with JSON for a function call. Respond in the format {"name": function '
    'name, "parameters": dictionary of argument name and its value}. Do not use variables.\n\n'
)


def _quoted(text: str) -> str:
    """``text`` as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


_ARGUMENTS = "(f['arguments'] if f['arguments'] is string else f['arguments'] | tojson)"
_THINK = (
    "{%- if m.get('reasoning_content') %}"
    "{{- '<think>\\n' + m['reasoning_content'] + '\\n</think>\\n\\n' }}{%- endif %}"
)

CHAT_ML = (
    "{%- set msgs = messages %}"
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] + '\\n\\n' }}{%- set msgs = messages[1:] %}{%- endif %}"
    "{{- " + _quoted(CHATML_TOOLS_INTRO) + " }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- " + _quoted(CHATML_TOOLS_OUTRO) + " + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in msgs %}"
    "{%- if m['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}" + _THINK + ""
    "{%- if m.get('content') %}{{- m['content'] }}{%- endif %}"
    "{%- for call in m.get('tool_calls') or [] %}{%- set f = call['function'] %}"
    "{%- if not loop.first or m.get('content') %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": ' + (f['name'] | tojson) + ', \"arguments\": ' + "
    + _ARGUMENTS
    + " + '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif m['role'] == 'tool' %}"
    "{%- if loop.first or msgs[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + m['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or msgs[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

SIMPLIFIED_LLAMA31 = (
    "{{- bos_token }}{%- set msgs = messages %}"
    "{%- if tools %}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + "
    + _quoted(LLAMA31_TOOLS_INTRO)
    + " }}{%- for tool in tools %}{{- (tool | tojson(indent=4)) + '\\n\\n' }}{%- endfor %}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] | trim }}{%- set msgs = messages[1:] %}{%- endif %}"
    "{{- '<|eot_id|>' }}{%- endif %}"
    "{%- for m in msgs %}"
    "{%- set role = 'ipython' if m['role'] == 'tool' else m['role'] %}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' }}" + _THINK + ""
    "{%- set content = (m.get('content') or '') | trim %}{{- content }}"
    "{%- for call in m.get('tool_calls') or [] %}{%- set f = call['function'] %}"
    "{%- if not loop.first or content %}{{- '\\n' }}{%- endif %}"
    "{{- '{\"name\": ' + (f['name'] | tojson) + ', \"parameters\": ' + "
    + _ARGUMENTS
    + " + '}' }}{%- endfor %}{{- '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
