"""The config against config/schema.yaml, said in one line: which setting, what is wrong with it, and
what the setting is for. Snakemake's own validation says it in a few hundred (the whole schema and
the whole config), with the one line that matters fifth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tier1.config import not_a_setting

DESCRIBED_MAX = 120


def _where(path) -> str:
    """gpu_counts[0] for the path ('gpu_counts', 0)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def first_problem(config: dict[str, Any], schema_path: Path) -> str | None:
    """The most telling problem of `config` under the schema, in one line; None where it is valid."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    properties = schema.get("properties", {})
    if error.validator == "additionalProperties" and not error.absolute_path:
        return not_a_setting(sorted(set(config) - set(properties))[0], properties)
    path = list(error.absolute_path)
    described = properties.get(path[0], {}).get("description") if path else None
    if described and len(described) > DESCRIBED_MAX:  # its first clause: what the setting is
        described = described.replace("; ", ": ").split(": ")[0]
    return f"{_where(path) or 'the config'}: {error.message}" + (f" ({path[0]}: {described})" if described else "")
