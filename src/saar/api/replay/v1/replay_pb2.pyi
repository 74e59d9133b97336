from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRecordRequest(_message.Message):
    __slots__ = ("replay_id",)
    REPLAY_ID_FIELD_NUMBER: _ClassVar[int]
    replay_id: str
    def __init__(self, replay_id: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("replay_id", "time", "session_id", "conversation_id", "decision", "action", "reason", "phase", "mode", "base", "target", "switched", "status", "prompt_tokens", "cached_tokens", "completion_tokens", "turn", "record_json")
    REPLAY_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SWITCHED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    replay_id: str
    time: float
    session_id: str
    conversation_id: str
    decision: str
    action: str
    reason: str
    phase: str
    mode: str
    base: str
    target: str
    switched: bool
    status: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    turn: int
    record_json: str
    def __init__(self, replay_id: _Optional[str] = ..., time: _Optional[float] = ..., session_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., decision: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., phase: _Optional[str] = ..., mode: _Optional[str] = ..., base: _Optional[str] = ..., target: _Optional[str] = ..., switched: _Optional[bool] = ..., status: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., turn: _Optional[int] = ..., record_json: _Optional[str] = ...) -> None: ...

class ListSessionRequest(_message.Message):
    __slots__ = ("session_id", "conversation_id", "hashed", "limit")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    HASHED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    conversation_id: str
    hashed: bool
    limit: int
    def __init__(self, session_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., hashed: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ListSessionResponse(_message.Message):
    __slots__ = ("session_id", "records")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, session_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("replay_id",)
    REPLAY_ID_FIELD_NUMBER: _ClassVar[int]
    replay_id: str
    def __init__(self, replay_id: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("text", "explanation_json")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_JSON_FIELD_NUMBER: _ClassVar[int]
    text: str
    explanation_json: str
    def __init__(self, text: _Optional[str] = ..., explanation_json: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("replay_id", "score", "note", "idempotency_key")
    REPLAY_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    replay_id: str
    score: float
    note: str
    idempotency_key: str
    def __init__(self, replay_id: _Optional[str] = ..., score: _Optional[float] = ..., note: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("created", "key", "score")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    created: bool
    key: str
    score: float
    def __init__(self, created: _Optional[bool] = ..., key: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...
