"""Params models of the core methods (``execute``, ``control``, ``input``,
``status``, ``attach``). Unknown fields are refused so that a typo such as
``timout`` is an error, not a silent default."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)


def _check_env(value: dict[str, str]) -> dict[str, str]:
    for name, item in value.items():
        if not name or "=" in name or "\0" in name or "\0" in item:
            raise ValueError(f"invalid environment entry {name!r}")
    return value


#: Variables a request adds to a child's environment: names exec can take.
ChildEnv = Annotated[dict[str, str], AfterValidator(_check_env)]

ExecutionId = Annotated[str, StringConstraints(min_length=1, max_length=128)]

#: JavaScript's Number.MAX_SAFE_INTEGER: every integer field is bounded by it,
#: so a client reads back what it sent and SQLite's 64 bits are never passed.
MAX_SAFE_INTEGER = 2**53 - 1
#: A sequence number or a row cursor.
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]


def parse_cursor(text: str) -> int:
    """The integer of an opaque page cursor; ValueError unless it is one we gave."""
    if not text.isascii() or not text.isdigit():
        raise ValueError("not a cursor")
    value = int(text)
    if value > MAX_SAFE_INTEGER:
        raise ValueError("not a cursor")
    return value


class StrictParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecuteParams(StrictParams):
    command: str | None = Field(
        None, min_length=1, description="Split like a POSIX shell, run directly."
    )
    argv: list[Annotated[str, StringConstraints(min_length=0)]] | None = Field(
        None, min_length=1, description="Executed as given."
    )
    cwd: str | None = None
    env: ChildEnv | None = None
    timeout: float | None = Field(None, gt=0, description="Wall-clock seconds.")
    stdin: bool = False
    shell: bool = False
    node: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The cluster node to run on (where the operator allows it); "
        "default: the node the client is connected to.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> ExecuteParams:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of command or argv")
        if self.shell and self.command is None:
            raise ValueError("shell needs command, not argv")
        return self

    @field_validator("argv")
    @classmethod
    def _argv_first(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value[0]:
            raise ValueError("argv[0] must not be empty")
        if value is not None and any("\0" in item for item in value):
            raise ValueError("argv must not contain NUL characters")
        return value


class ControlParams(StrictParams):
    type: Literal["PAUSE", "RESUME", "CANCEL"]
    execution_id: ExecutionId | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class InputParams(StrictParams):
    execution_id: ExecutionId
    data: str = ""
    eof: bool = False


class StatusParams(StrictParams):
    execution_id: ExecutionId | None = None


class AttachParams(StrictParams):
    execution_id: ExecutionId
    since_seq: Count = 0
