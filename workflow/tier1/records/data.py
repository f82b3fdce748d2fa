"""The data stages' records: the manifest (prepare: what the data set is) and the tokenize record
(what was tokenised and in how many seconds); layout.MANIFEST and layout.TOKENS_RECORD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class ManifestRecord(Stamped):
    KIND = "manifest"

    stage: str
    dataset: Any                        # the source's description (a string or a block)
    seed: int
    work_s: float
    counts: dict[str, int]
    content_sha256: dict[str, str]      # what the data is, whatever produced it
    config: dict[str, Any]


@dataclass(frozen=True)
class TokensRecord(Stamped):
    KIND = "tokens"

    stage: str
    work_s: float
    counts: dict[str, int]
    truncated: dict[str, Any]
    max_seq_length: int
    config: dict[str, Any]
