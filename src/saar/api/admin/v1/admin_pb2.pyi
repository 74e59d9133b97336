from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PhysicalModel(_message.Message):
    __slots__ = ("key", "model", "pool", "cluster", "accelerator", "quality", "prompt_per_1m", "cached_prompt_per_1m", "completion_per_1m")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_PER_1M_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_PER_1M_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_PER_1M_FIELD_NUMBER: _ClassVar[int]
    key: str
    model: str
    pool: str
    cluster: str
    accelerator: str
    quality: float
    prompt_per_1m: float
    cached_prompt_per_1m: float
    completion_per_1m: float
    def __init__(self, key: _Optional[str] = ..., model: _Optional[str] = ..., pool: _Optional[str] = ..., cluster: _Optional[str] = ..., accelerator: _Optional[str] = ..., quality: _Optional[float] = ..., prompt_per_1m: _Optional[float] = ..., cached_prompt_per_1m: _Optional[float] = ..., completion_per_1m: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("name", "priority", "method", "mode", "candidates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    priority: int
    method: str
    mode: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., priority: _Optional[int] = ..., method: _Optional[str] = ..., mode: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("version", "config_source", "logical_models", "physical_models", "decisions", "default_decision", "scope", "state_backend")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_MODELS_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_MODELS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DECISION_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    version: str
    config_source: str
    logical_models: _containers.RepeatedScalarFieldContainer[str]
    physical_models: _containers.RepeatedCompositeFieldContainer[PhysicalModel]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    default_decision: str
    scope: str
    state_backend: str
    def __init__(self, version: _Optional[str] = ..., config_source: _Optional[str] = ..., logical_models: _Optional[_Iterable[str]] = ..., physical_models: _Optional[_Iterable[_Union[PhysicalModel, _Mapping]]] = ..., decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., default_decision: _Optional[str] = ..., scope: _Optional[str] = ..., state_backend: _Optional[str] = ...) -> None: ...
