"""One emulated vLLM replica: an aiohttp application with its own cache, store and log.

Everything a router can observe behaves like vLLM: the OpenAI and Anthropic endpoints and
their streaming shapes, ``cached_tokens`` from a real per-replica prefix cache, the
per-replica Responses store behind ``previous_response_id``, ``/health``, ``/metrics`` and
vLLM's error bodies. Generation is scripted (see :mod:`saar.emulator.script`) and paced by
the pool's latency model with ``asyncio.sleep``, so nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from saar.emulator.backend_log import DEFAULT_LOG_SIZE, LogRecord, ReplicaLog
from saar.emulator.conversation import (
    Api,
    ParsedRequest,
    Phase,
    RequestError,
    parse_chat,
    parse_messages,
    parse_responses,
)
from saar.emulator.faults import FaultPlan, FaultRule, RequestFacts
from saar.emulator.metrics import CONTENT_TYPE, ReplicaMetrics
from saar.emulator.prefix_cache import PrefixCache
from saar.emulator.script import Output, generate, new_id
from saar.emulator.spec import PoolSpec
from saar.emulator.tokens import Turn, render, render_output

__all__ = [
    "AFFINITY_HEADER",
    "CONVERSATION_HEADER",
    "LOGGED_HEADER_PREFIXES",
    "MAX_BODY_BYTES",
    "SESSION_HEADER",
    "Replica",
]

AFFINITY_HEADER = "x-saar-affinity-key"
SESSION_HEADER = "x-session-id"
CONVERSATION_HEADER = "x-conversation-id"
#: Request headers copied into the truth log (the router's own annotations).
LOGGED_HEADER_PREFIXES = ("x-saar-", "x-vsr-")
#: Agent prompts are large; aiohttp's 1 MiB default would reject real traffic.
MAX_BODY_BYTES = 64 * 1024 * 1024
# vLLM keeps stored responses forever (a documented leak); bound it so benchmarks can run
# for hours. Least recently used ids go first.
_STORE_SIZE = 100_000
_ARG_FRAGMENT = 8

_RID = web.RequestKey("rid", str)
_RECORD = web.RequestKey("record", LogRecord)

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class _Stored:
    turns: tuple[Turn, ...]
    model: str


@dataclass(slots=True)
class _Generation:
    """Everything the API formatters need about one finished generation."""

    parsed: ParsedRequest
    served_model: str
    output: Output
    prompt_tokens: int
    cached_tokens: int
    response_id: str
    created: int

    @property
    def completion_tokens(self) -> int:
        return self.output.completion_tokens


# An SSE event to write, and whether it carries a generated token (and so is paced).
_Event = tuple[bytes, bool]


def _json_response(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=_json.encode(body), content_type="application/json")


def _error_response(err: RequestError) -> web.Response:
    return _json_response(err.status, err.body())


def _sse(data: object, event: str | None = None) -> bytes:
    payload = _json.encode(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


def _fragments(text: str) -> list[str]:
    return [text[i : i + _ARG_FRAGMENT] for i in range(0, len(text), _ARG_FRAGMENT)] or [""]


class Replica:
    """One vLLM replica of a pool: HTTP app, prefix cache, response store, metrics and log."""

    def __init__(
        self,
        pool: PoolSpec,
        index: int,
        host: str,
        port: int,
        faults: FaultPlan,
        *,
        log_size: int = DEFAULT_LOG_SIZE,
    ) -> None:
        self.pool = pool
        self.index = index
        self.host = host
        self.port = port
        self.faults = faults
        self.down = False
        self.cache = PrefixCache(pool.cache_blocks, pool.block_size)
        self.log = ReplicaLog(log_size)
        self.metrics = ReplicaMetrics(pool.models, lambda: self.cache.usage)
        self._store: OrderedDict[str, _Stored] = OrderedDict()
        # vLLM's --max-num-seqs: beyond it requests queue (vllm:num_requests_waiting).
        self._slots = asyncio.Semaphore(pool.max_num_seqs) if pool.max_num_seqs else None
        self.app = self._build_app()

    @property
    def name(self) -> str:
        """``<pool>/<index>``, as in the ``x-emulator-replica`` header."""
        return f"{self.pool.name}/{self.index}"

    @property
    def url(self) -> str:
        """Base URL of the replica (``http://host:port``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def reset(self) -> None:
        """Drop the prefix cache and the response store (the log is kept)."""
        self.cache.clear()
        self._store.clear()

    def describe(self) -> dict[str, Any]:
        """Return the replica's identity and state as JSON."""
        return {
            "pool": self.pool.name,
            "replica": self.index,
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "url": self.url,
            "state": "down" if self.down else "up",
            "models": list(self.pool.model_names),
            "cache_blocks_used": len(self.cache),
            "cache_blocks": self.cache.capacity,
            "stored_responses": len(self._store),
        }

    # -- app wiring ------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._middleware])
        app.on_response_prepare.append(self._stamp_headers)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/_emulator/log", self._log)
        return app

    async def _stamp_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-emulator-pool"] = self.pool.name
        response.headers["x-emulator-replica"] = self.name
        response.headers["x-emulator-request-id"] = request.get(_RID, "")

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        rid = uuid.uuid4().hex
        request[_RID] = rid
        if request.path.startswith("/_emulator/"):
            # Introspection stays available while the replica plays dead.
            return await handler(request)
        record: LogRecord | None = None
        if request.path.startswith("/v1/"):
            headers = request.headers
            record = LogRecord(
                time=time.time(),
                pool=self.pool.name,
                replica=self.index,
                request_id=rid,
                method=request.method,
                path=request.path,
                affinity_key=headers.get(AFFINITY_HEADER),
                session_id=headers.get(SESSION_HEADER),
                conversation_id=headers.get(CONVERSATION_HEADER),
                headers={
                    k.lower(): v
                    for k, v in headers.items()
                    if k.lower().startswith(LOGGED_HEADER_PREFIXES)
                },
            )
            request[_RECORD] = record
        try:
            if self.down:
                response: web.StreamResponse = _json_response(
                    503,
                    RequestError(
                        503, f"Replica {self.name} is down.", "ServiceUnavailableError"
                    ).body(),
                )
            else:
                response = await handler(request)
            if record is not None and record.status == 0:
                record.status = response.status
        except web.HTTPException as exc:
            if record is not None:
                record.status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionError):
            # The client went away (possibly mid-stream) or the server is stopping: nginx's 499.
            if record is not None:
                record.status = 499
            raise
        except Exception:
            if record is not None:
                record.status = 500
            raise
        finally:
            if record is not None:
                self.log.append(record)
        return response

    # -- simple endpoints ------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.pool.resolve_model(name),
                "parent": None,
                "max_model_len": 131072,
            }
            for name in self.pool.model_names
        ]
        return _json_response(200, {"object": "list", "data": data})

    async def _log(self, request: web.Request) -> web.Response:
        return _json_response(200, [r.to_json() for r in self.log])

    # -- generation ------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Api.CHAT, parse_chat)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Api.RESPONSES, parse_responses)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Api.MESSAGES, parse_messages)

    async def _generate(
        self, request: web.Request, api: Api, parse: Callable[[object], ParsedRequest]
    ) -> web.StreamResponse:
        record = request[_RECORD]
        record.api = api.value
        try:
            try:
                raw = _decode.decode(await request.read())
            except msgspec.DecodeError as exc:
                raise RequestError(400, f"Invalid JSON in request body: {exc}") from exc
            parsed = parse(raw)
        except RequestError as err:
            return _error_response(err)
        record.model = parsed.model
        record.stream = parsed.stream
        record.previous_response_id = parsed.previous_response_id

        stored: _Stored | None = None
        if parsed.previous_response_id is not None:
            stored = self._store.get(parsed.previous_response_id)
            if stored is not None:
                self._store.move_to_end(parsed.previous_response_id)
        history: list[Turn] = list(stored.turns) if stored is not None else []
        history.extend(parsed.turns)
        turns = history
        if parsed.instructions is not None:
            # Instructions are not carried over by previous_response_id; render them first.
            turns = [Turn("system", parsed.instructions), *history]
        phase = _phase(parsed, turns)
        record.phase = phase.value
        record.turn = sum(1 for t in turns if t.role == "assistant")
        record.tool_result_ids = [
            t.tool_result_id for t in _trailing_tool_turns(parsed.turns) if t.tool_result_id
        ]

        rule = self.faults.pick(
            RequestFacts(
                pool=self.pool.name,
                replica=self.index,
                api=api.value,
                model=parsed.model,
                session=record.session_id,
                conversation=record.conversation_id,
                affinity_key=record.affinity_key,
                turn=record.turn,
                phase=record.phase,
            )
        )
        if rule is not None:
            return await self._inject(rule, record)

        served = self.pool.resolve_model(parsed.model)
        if served is None:
            return _error_response(
                RequestError(
                    404, f"The model `{parsed.model}` does not exist.", "NotFoundError", "model"
                )
            )
        record.served_model = served
        if parsed.previous_response_id is not None and stored is None:
            return _error_response(
                RequestError(
                    404,
                    f"Response with id '{parsed.previous_response_id}' not found.",
                    "invalid_request_error",
                    "previous_response_id",
                )
            )

        waiting = self.metrics.waiting.labels(served)
        started = time.perf_counter()
        slots = self._slots
        if slots is not None:
            waiting.inc()
            try:
                await slots.acquire()
            finally:
                waiting.dec()
        try:
            return await self._run(
                request,
                api,
                parsed,
                record,
                served=served,
                turns=turns,
                history=history,
                queued_s=time.perf_counter() - started,
            )
        finally:
            if slots is not None:
                slots.release()

    async def _run(
        self,
        request: web.Request,
        api: Api,
        parsed: ParsedRequest,
        record: LogRecord,
        *,
        served: str,
        turns: list[Turn],
        history: list[Turn],
        queued_s: float,
    ) -> web.StreamResponse:
        """Prefill (cache lookup), generate and answer one admitted request."""
        prompt = render(parsed.tools_text, turns)
        chain = self.cache.chain(prompt, served, parsed.cache_salt)
        # vLLM always recomputes the last prompt token, so a fully cached prompt still
        # reports at most len(prompt) - 1 tokens, rounded down to whole blocks.
        cached = min(
            self.cache.lookup_and_insert(chain), _whole_blocks(len(prompt) - 1, chain.block_size)
        )
        max_tokens = parsed.max_tokens or self.pool.max_tokens_default
        output = generate(
            turns,
            has_tools=bool(parsed.tool_names),
            model=served,
            pool=self.pool.name,
            max_tokens=max_tokens,
            call_id_prefix="toolu_" if api is Api.MESSAGES else "call_",
        )
        gen = _Generation(
            parsed=parsed,
            served_model=served,
            output=output,
            prompt_tokens=len(prompt),
            cached_tokens=cached,
            response_id=_response_id(api),
            created=int(time.time()),
        )
        record.prompt_tokens = gen.prompt_tokens
        record.cached_tokens = cached
        record.completion_tokens = gen.completion_tokens
        record.response_id = gen.response_id
        record.tool_call_ids = [c.call_id for c in output.tool_calls]

        m = self.metrics
        m.prefix_queries.labels(served).inc(gen.prompt_tokens)
        m.prefix_hits.labels(served).inc(cached)
        m.prompt_tokens.labels(served).inc(gen.prompt_tokens)
        latency = self.pool.latency
        ttft = latency.ttft_s(gen.prompt_tokens, cached)
        running = m.running.labels(served)
        running.inc()

        def commit() -> None:
            # Runs once the last token is out but before the final events: a client that
            # reads `response.completed` and continues at once must find the stored id.
            # Generated tokens fill blocks too; vLLM caches them, so the next turn hits.
            self.cache.insert(self.cache.extend(chain, prompt, render_output(output.as_turn())))
            m.generation_tokens.labels(served).inc(gen.completion_tokens)
            m.success.labels(served, "stop").inc()
            if api is Api.RESPONSES and parsed.store:
                self._store[gen.response_id] = _Stored((*history, output.as_turn()), served)
                while len(self._store) > _STORE_SIZE:
                    self._store.popitem(last=False)
                record.stored = True

        m.ttft.labels(served).observe(queued_s + ttft)
        try:
            if not parsed.stream:
                total = ttft + latency.decode_s * max(gen.completion_tokens - 1, 0)
                if total > 0:
                    await asyncio.sleep(total)
                commit()
                return _json_response(200, _BODIES[api](gen))
            events = _EVENTS[api](gen)
            last_token = max(i for i, (_, is_token) in enumerate(events) if is_token)
            response = web.StreamResponse(
                status=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            )
            await response.prepare(request)
            record.status = 200
            delay = ttft
            try:
                for i, (payload, is_token) in enumerate(events):
                    if is_token:
                        if delay > 0:
                            await asyncio.sleep(delay)
                        delay = latency.decode_s
                    elif i == last_token + 1:
                        commit()
                    await response.write(payload)
                await response.write_eof()
            except ConnectionError:
                # The client hung up mid-stream (vLLM aborts the request): log it, no trace.
                record.status = 499
            return response
        finally:
            running.dec()

    async def _inject(self, rule: FaultRule, record: LogRecord) -> web.Response:
        record.fault = str(rule.status)
        if rule.delay_s > 0:
            await asyncio.sleep(rule.delay_s)
        if rule.is_timeout:
            return _json_response(
                504,
                RequestError(504, "Injected timeout (emulator fault plan).", "Timeout").body(),
            )
        status = int(rule.status)
        kinds = {
            429: "RateLimitError",
            500: "InternalServerError",
            502: "BadGatewayError",
            503: "ServiceUnavailableError",
            504: "Timeout",
        }
        response = _json_response(
            status,
            RequestError(
                status, f"Injected fault {status} (emulator fault plan).", kinds[status]
            ).body(),
        )
        if rule.retry_after is not None:
            response.headers["Retry-After"] = f"{rule.retry_after:g}"
        return response


def _whole_blocks(tokens: int, block_size: int) -> int:
    return max(tokens, 0) // block_size * block_size


def _trailing_tool_turns(turns: list[Turn]) -> list[Turn]:
    out: list[Turn] = []
    for turn in reversed(turns):
        if turn.role != "tool":
            break
        out.append(turn)
    out.reverse()
    return out


def _phase(parsed: ParsedRequest, turns: list[Turn]) -> Phase:
    last = turns[-1] if turns else None
    if last is not None and last.role == "tool":
        return Phase.TOOL_RESULT
    if parsed.previous_response_id is not None or (last is not None and last.role == "assistant"):
        return Phase.CONTINUATION
    return Phase.USER_TURN


def _response_id(api: Api) -> str:
    if api is Api.CHAT:
        return new_id("chatcmpl-", 16)
    if api is Api.RESPONSES:
        return new_id("resp_", 16)
    return new_id("msg_", 12)


# -- Chat Completions ----------------------------------------------------------------------


def _chat_usage(gen: _Generation) -> dict[str, Any]:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": gen.cached_tokens},
    }


def _chat_body(gen: _Generation) -> dict[str, Any]:
    out = gen.output
    message: dict[str, Any] = {"role": "assistant", "content": out.text or None}
    if out.is_tool_call:
        message["tool_calls"] = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in out.tool_calls
        ]
    else:
        message["tool_calls"] = []
    return {
        "id": gen.response_id,
        "object": "chat.completion",
        "created": gen.created,
        "model": gen.served_model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if out.is_tool_call else "stop",
            }
        ],
        "usage": _chat_usage(gen),
    }


def _chat_events(gen: _Generation) -> list[_Event]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": gen.response_id,
                "object": "chat.completion.chunk",
                "created": gen.created,
                "model": gen.served_model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    out = gen.output
    events: list[_Event] = [(chunk({"content": piece}), True) for piece in out.pieces]
    for i, call in enumerate(out.tool_calls):
        head = {
            "index": i,
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events.append((chunk({"tool_calls": [head]}), True))
        events.extend(
            (chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}), True)
            for frag in _fragments(call.arguments)
        )
    # vLLM sends the role chunk together with the first generated token, so a client's
    # time to first byte of the body is the time to first token.
    role = chunk({"role": "assistant", "content": ""})
    events[0] = (role + events[0][0], True)
    events.append((chunk({}, "tool_calls" if out.is_tool_call else "stop"), False))
    if gen.parsed.include_usage:
        usage = {
            "id": gen.response_id,
            "object": "chat.completion.chunk",
            "created": gen.created,
            "model": gen.served_model,
            "choices": [],
            "usage": _chat_usage(gen),
        }
        events.append((_sse(usage), False))
    events.append((b"data: [DONE]\n\n", False))
    return events


# -- Responses -----------------------------------------------------------------------------


def _responses_usage(gen: _Generation) -> dict[str, Any]:
    return {
        "input_tokens": gen.prompt_tokens,
        "input_tokens_details": {"cached_tokens": gen.cached_tokens},
        "output_tokens": gen.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
    }


def _responses_items(gen: _Generation) -> list[dict[str, Any]]:
    out = gen.output
    if out.is_tool_call:
        return [
            {
                "type": "function_call",
                "id": "fc_" + c.call_id.removeprefix("call_"),
                "call_id": c.call_id,
                "name": c.name,
                "arguments": c.arguments,
                "status": "completed",
            }
            for c in out.tool_calls
        ]
    return [
        {
            "type": "message",
            "id": "msg_" + gen.response_id.removeprefix("resp_"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": out.text, "annotations": []}],
        }
    ]


def _responses_body(gen: _Generation, *, done: bool = True) -> dict[str, Any]:
    parsed = gen.parsed
    return {
        "id": gen.response_id,
        "object": "response",
        "created_at": gen.created,
        "status": "completed" if done else "in_progress",
        "model": gen.served_model,
        "output": _responses_items(gen) if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "previous_response_id": parsed.previous_response_id,
        "store": parsed.store,
        "instructions": parsed.instructions,
        "text": {"format": {"type": "text"}},
        "error": None,
        "incomplete_details": None,
        "metadata": {},
        "usage": _responses_usage(gen) if done else None,
    }


def _responses_events(gen: _Generation) -> list[_Event]:
    seq = 0
    events: list[_Event] = []

    def emit(kind: str, is_token: bool = False, **fields: Any) -> None:
        nonlocal seq
        events.append((_sse({"type": kind, "sequence_number": seq, **fields}, kind), is_token))
        seq += 1

    emit("response.created", response=_responses_body(gen, done=False))
    emit("response.in_progress", response=_responses_body(gen, done=False))
    out = gen.output
    for index, item in enumerate(_responses_items(gen)):
        if item["type"] == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for frag in _fragments(item["arguments"]):
                emit(
                    "response.function_call_arguments.delta",
                    True,
                    item_id=item["id"],
                    output_index=index,
                    delta=frag,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        else:
            part = {"type": "output_text", "text": "", "annotations": []}
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            emit(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            for piece in out.pieces:
                emit(
                    "response.output_text.delta",
                    True,
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            emit(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=out.text,
                logprobs=[],
            )
            emit(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part={**part, "text": out.text},
            )
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=_responses_body(gen))
    return events


# -- Anthropic Messages --------------------------------------------------------------------


def _messages_usage(gen: _Generation) -> dict[str, Any]:
    # Anthropic semantics: input_tokens excludes the tokens read from the cache.
    return {
        "input_tokens": gen.prompt_tokens - gen.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": gen.cached_tokens,
        "output_tokens": gen.completion_tokens,
    }


def _messages_content(gen: _Generation) -> list[dict[str, Any]]:
    out = gen.output
    if out.is_tool_call:
        return [
            {
                "type": "tool_use",
                "id": c.call_id,
                "name": c.name,
                "input": _decode.decode(c.arguments),
            }
            for c in out.tool_calls
        ]
    return [{"type": "text", "text": out.text}]


def _messages_body(gen: _Generation) -> dict[str, Any]:
    return {
        "id": gen.response_id,
        "type": "message",
        "role": "assistant",
        "model": gen.served_model,
        "content": _messages_content(gen),
        "stop_reason": "tool_use" if gen.output.is_tool_call else "end_turn",
        "stop_sequence": None,
        "usage": _messages_usage(gen),
    }


def _messages_events(gen: _Generation) -> list[_Event]:
    events: list[_Event] = []

    def emit(kind: str, is_token: bool = False, **fields: Any) -> None:
        events.append((_sse({"type": kind, **fields}, kind), is_token))

    start = {**_messages_body(gen), "content": [], "stop_reason": None}
    start["usage"] = {**_messages_usage(gen), "output_tokens": 1}
    emit("message_start", message=start)
    emit("ping")
    out = gen.output
    if out.is_tool_call:
        for index, call in enumerate(out.tool_calls):
            block = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
            emit("content_block_start", index=index, content_block=block)
            for frag in _fragments(call.arguments):
                emit(
                    "content_block_delta",
                    True,
                    index=index,
                    delta={"type": "input_json_delta", "partial_json": frag},
                )
            emit("content_block_stop", index=index)
    else:
        emit("content_block_start", index=0, content_block={"type": "text", "text": ""})
        for piece in out.pieces:
            emit("content_block_delta", True, index=0, delta={"type": "text_delta", "text": piece})
        emit("content_block_stop", index=0)
    emit(
        "message_delta",
        delta={
            "stop_reason": "tool_use" if out.is_tool_call else "end_turn",
            "stop_sequence": None,
        },
        usage=_messages_usage(gen),
    )
    emit("message_stop")
    return events


_BODIES: dict[Api, Callable[[_Generation], dict[str, Any]]] = {
    Api.CHAT: _chat_body,
    Api.RESPONSES: _responses_body,
    Api.MESSAGES: _messages_body,
}
_EVENTS: dict[Api, Callable[[_Generation], list[_Event]]] = {
    Api.CHAT: _chat_events,
    Api.RESPONSES: _responses_events,
    Api.MESSAGES: _messages_events,
}
