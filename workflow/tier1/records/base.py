"""What every record kind shares: one frozen dataclass per kind, its schema written into the file,
written through tier1.runtime.atomic and read back strictly.

A record's file is its fields as JSON plus `"schema": "<kind>/<version>"`. Reading checks the
schema and that the file holds exactly the declared fields: a missing, renamed or unknown field,
or another schema version, is a RecordError naming the file and the field, never a default.
Blocks that are free-form by nature (provenance, per-rank lists, nested measurements) stay dicts
and lists inside a declared field. Torch-free: the workflow and the report import it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tier1.runtime import atomic

SCHEMA_KEY = "schema"

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A record file that does not hold what its kind declares."""




@dataclasses.dataclass(frozen=True)
class Record:
    """Base of the record kinds: subclasses set KIND and VERSION and declare their fields."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    @classmethod
    def schema(cls) -> str:
        return f"{cls.KIND}/{cls.VERSION}"

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_json(self) -> dict[str, Any]:
        """The file's content: the schema, then the fields in declaration order (values as they are)."""
        return {SCHEMA_KEY: self.schema(), **{name: getattr(self, name) for name in self.field_names()}}

    def write(self, path: str | Path) -> None:
        atomic.write_json(Path(path), self.to_json())

    @classmethod
    def from_json(cls: type[R], data: Any, source: str | Path) -> R:
        """The record `data` holds; `source` names where it came from in the error."""
        what = f"a {cls.KIND} record ({cls.schema()})"
        if not isinstance(data, dict):
            raise RecordError(f"{source}: not {what}: the file holds a {type(data).__name__}, not a JSON object")
        found = data.get(SCHEMA_KEY)
        if found != cls.schema():
            raise RecordError(f"{source}: field {SCHEMA_KEY!r} is {found!r}, expected {cls.schema()!r} ({what}); "
                              "rerun the stage that writes it")
        names = cls.field_names()
        missing = [n for n in names if n not in data]
        unknown = [k for k in data if k != SCHEMA_KEY and k not in names]
        if missing or unknown:
            parts = ([f"missing field(s) {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"unknown field(s) {', '.join(map(repr, unknown))}"] if unknown else [])
            raise RecordError(f"{source}: not {what}: {'; '.join(parts)}; rerun the stage that writes it")
        return cls(**{n: data[n] for n in names})

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise RecordError(f"{path}: no such file ({cls.KIND} record)") from None
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not JSON ({err}); rerun the stage that writes it") from None
        return cls.from_json(data, path)
