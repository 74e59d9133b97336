"""The scripted "model": deterministic answers that can drive agent tool loops end to end.

Rules, in order:

1. The last message is a tool result (Chat ``role: tool``, Responses
   ``function_call_output``, Messages ``tool_result``): answer with text
   ``[<model>@<pool>] Tool NAME returned <output words>`` (one clause per trailing result).
2. The request declares ``tools`` and the last message is a user message containing
   ``[[call:NAME]]`` or ``[[call:NAME {json args}]]``: answer with those tool calls, one per
   marker, in order (several markers are parallel tool calls). Names need not be declared.
3. Otherwise: ``[<model>@<pool>]`` followed by the words of the last user message (cycled;
   a fixed filler when there are none), exactly ``max_tokens`` tokens long.

Each generated text piece counts as one completion token.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from saar.emulator.tokens import ToolCall, Turn, count_tokens

__all__ = ["MARKER", "Output", "generate", "new_id", "parse_markers"]

#: ``[[call:NAME]]`` or ``[[call:NAME {json}]]``; the arguments end at the first ``}]]``.
MARKER = re.compile(r"\[\[call:([A-Za-z0-9_.\-]+)(?:\s+(\{.*?\}))?\s*\]\]", re.DOTALL)
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
_WORD = re.compile(r"\w+")
_RESULT_WORDS = 8


def new_id(prefix: str, nbytes: int = 12) -> str:
    """Return a fresh random id such as ``call_0123abcd...``."""
    return f"{prefix}{secrets.token_hex(nbytes)}"


def parse_markers(text: str) -> list[tuple[str, str]]:
    """Return ``(name, arguments_json)`` for every tool-call marker in ``text``.

    Arguments that are not valid JSON objects are passed on as ``{"raw": "<text>"}`` so the
    result is always a JSON object string.
    """
    calls: list[tuple[str, str]] = []
    for match in MARKER.finditer(text):
        name, raw_args = match.group(1), match.group(2)
        if raw_args is None:
            calls.append((name, "{}"))
            continue
        try:
            args = json.loads(raw_args)
        except ValueError:
            args = {"raw": raw_args}
        if not isinstance(args, dict):
            args = {"value": args}
        calls.append((name, json.dumps(args, separators=(",", ":"), ensure_ascii=False)))
    return calls


@dataclass(frozen=True, slots=True)
class Output:
    """What the scripted model generated: text pieces (one token each) or tool calls."""

    pieces: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]

    @property
    def text(self) -> str:
        """The generated text."""
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        """Number of generated tokens (tool calls count name + arguments + 1 each)."""
        return len(self.pieces) + sum(
            count_tokens(c.name) + count_tokens(c.arguments) + 1 for c in self.tool_calls
        )

    @property
    def is_tool_call(self) -> bool:
        """Whether the model answered with tool calls."""
        return bool(self.tool_calls)

    def as_turn(self) -> Turn:
        """Return the assistant turn as a follow-up request will send it back."""
        return Turn("assistant", self.text, self.tool_calls)


def _trailing_results(turns: Sequence[Turn]) -> list[Turn]:
    results: list[Turn] = []
    for turn in reversed(turns):
        if turn.role != "tool":
            break
        results.append(turn)
    results.reverse()
    return results


def generate(
    turns: Sequence[Turn],
    *,
    has_tools: bool,
    model: str,
    pool: str,
    max_tokens: int,
    call_id_prefix: str = "call_",
) -> Output:
    """Produce the scripted answer for a conversation (see the module docstring)."""
    header = f"[{model}@{pool}]"
    max_tokens = max(max_tokens, 1)
    results = _trailing_results(turns)
    if results:
        names: dict[str, str] = {}
        for turn in turns:
            for call in turn.tool_calls:
                names[call.call_id] = call.name
        pieces = [header]
        for n, result in enumerate(results):
            name = names.get(result.tool_result_id or "", "unknown")
            words = _WORD.findall(result.text)[:_RESULT_WORDS] or ["nothing"]
            if n:
                pieces.append(";")
            pieces.extend(f" {w}" for w in ("Tool", name, "returned", *words))
        return Output(tuple(pieces[:max_tokens]), ())
    last = turns[-1] if turns else None
    if has_tools and last is not None and last.role == "user":
        markers = parse_markers(last.text)
        if markers:
            calls = tuple(
                ToolCall(call_id=new_id(call_id_prefix), name=name, arguments=args)
                for name, args in markers
            )
            return Output((), calls)
    last_user = next((t for t in reversed(turns) if t.role == "user"), None)
    words = _WORD.findall(last_user.text) if last_user is not None else []
    # Markers' own words would make plain answers look like calls; drop them.
    words = [w for w in words if w != "call"] or list(_FILLER)
    pieces = [header]
    i = 0
    while len(pieces) < max_tokens:
        pieces.append(f" {words[i % len(words)]}")
        i += 1
    return Output(tuple(pieces), ())
