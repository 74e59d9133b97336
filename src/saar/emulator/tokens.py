r"""A deterministic tokenizer approximation and the prompt renderer.

No model weights exist here, so token counts are approximated: the text is split by the
regular expression ``\w+|[^\w\s]`` (runs of word characters, or any single character
that is neither a word character nor whitespace) and every piece is one token. Whitespace
is free. The count is stable across runs and machines, which is what the prefix cache and
the tests need; it is not meant to match any real vocabulary.

The renderer plays the part of a chat template: tool schemas first, then every message in
order as ``<|role|>`` + content + tool calls / tool results + ``<|end|>``, then the
generation prompt ``<|assistant|>``. Because the generation prompt is also how the next
turn's assistant message starts, turn N+1 of a conversation extends turn N's token
sequence, exactly as with a real chat template and vLLM's prefix cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ToolCall", "Turn", "count_tokens", "render", "render_output", "tokenize"]

_PIECE = re.compile(r"\w+|[^\w\s]")
_GENERATION_PROMPT = "<|assistant|>"


def tokenize(text: str) -> list[str]:
    """Split text into approximate tokens (word runs and single punctuation marks)."""
    return _PIECE.findall(text)


def count_tokens(text: str) -> int:
    """Return the number of approximate tokens in ``text``."""
    return sum(1 for _ in _PIECE.finditer(text))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call made by the assistant (any API), arguments as a JSON string."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation, normalised across Chat, Responses and Messages.

    ``role`` is ``system``, ``user``, ``assistant`` or ``tool``. A ``tool`` turn carries
    one tool result: ``tool_result_id`` is the call it answers and ``text`` its output.
    """

    role: str
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    tool_result_id: str | None = None


def _render_turn(turn: Turn, out: list[str]) -> None:
    out.append(f"<|{turn.role}|>")
    if turn.tool_result_id is not None:
        # The id is rendered so that two results with equal text stay distinct, as the
        # chat templates of tool-calling models do.
        out.append("<|tool_result|>")
        out.extend(tokenize(turn.tool_result_id))
    out.extend(tokenize(turn.text))
    for call in turn.tool_calls:
        out.append("<|tool_call|>")
        out.extend(tokenize(call.name))
        out.extend(tokenize(call.arguments))
    out.append("<|end|>")


def render(tools_text: str, turns: Iterable[Turn]) -> list[str]:
    """Render a prompt into tokens: tools, every turn in order, then the generation prompt."""
    out: list[str] = []
    if tools_text:
        out.append("<|tools|>")
        out.extend(tokenize(tools_text))
        out.append("<|end|>")
    for turn in turns:
        _render_turn(turn, out)
    out.append(_GENERATION_PROMPT)
    return out


def render_output(output: Turn) -> list[str]:
    """Render the generated assistant turn as the next request will render it.

    The result continues :func:`render`'s output: the ``<|assistant|>`` token is already
    the last prompt token, so only the content and ``<|end|>`` follow.
    """
    out: list[str] = []
    _render_turn(output, out)
    return out[1:]
