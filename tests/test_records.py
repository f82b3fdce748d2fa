"""The record classes (tier1.records): every kind writes and reads back equal, with its schema in the
file; a missing, unknown or renamed field, another schema version or another kind's file is an
error that names the file and the field, never a default. Torch-free."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tier1 import records
from tier1.records import Record, RecordError, TrainRecord
from tier1.records.base import SCHEMA_KEY
from tier1.runtime import provenance

KINDS = [getattr(records, name) for name in records.__all__
         if isinstance(getattr(records, name), type) and issubclass(getattr(records, name), Record)
         and getattr(records, name) is not Record]


def sample(kind: type[Record]) -> Record:
    """A record of `kind` whose every field holds a value of its declared shape, distinct per field."""
    values = {}
    for i, f in enumerate(dataclasses.fields(kind)):
        shape = str(f.type)
        values[f.name] = ({"n": i, "nested": {"x": [i, i + 0.5]}} if shape.startswith("dict")
                          else [i, f"v{i}"] if shape.startswith("list")
                          else i + 0.25 if "float" in shape.split("|")[0]
                          else i if "int" in shape.split("|")[0]
                          else f.name == "checksums_equal" if "bool" in shape
                          else f"{f.name}-{i}")
    stamp = provenance.stamp("cafe")
    return kind(**{**values, **{k: v for k, v in stamp.items() if k in values}})


def test_every_kind_the_stages_write_has_a_class():
    kinds = {k.KIND for k in KINDS}
    assert kinds == {"train", "evaluation", "probe", "collectives", "preflight", "manifest", "tokens", "bench",
                     "rank_compute", "sweep", "check_gpus", "cosine"}
    assert len({k.schema() for k in KINDS}) == len(KINDS)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_a_record_reads_back_equal_with_its_schema_in_the_file(kind, tmp_path):
    record = sample(kind)
    path = tmp_path / f"{kind.KIND}.json"
    record.write(path)
    on_disk = json.loads(path.read_text())
    assert on_disk[SCHEMA_KEY] == f"{kind.KIND}/{kind.VERSION}"
    assert set(on_disk) == {SCHEMA_KEY, *kind.field_names()}
    assert kind.read(path) == record
    assert not list(tmp_path.glob(".tier1-tmp.*"))  # written through tier1.runtime.atomic


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_a_missing_field_is_an_error_naming_the_file_and_the_field(kind, tmp_path):
    data = sample(kind).to_json()
    name = kind.field_names()[-1]
    del data[name]
    path = tmp_path / "record.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{path}: not a {kind.KIND} record .*missing field\(s\) '{name}'"):
        kind.read(path)


def test_a_renamed_field_names_both_names(tmp_path):
    data = sample(TrainRecord).to_json()
    data["attention"] = data.pop("encoder")  # the name before the encoder block
    path = tmp_path / "train_metrics.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as err:
        TrainRecord.read(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "missing field(s) 'encoder'" in message
    assert "unknown field(s) 'attention'" in message and "rerun the stage" in message


def test_an_unknown_field_is_an_error(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({**sample(records.TokensRecord).to_json(), "extra": 1}))
    with pytest.raises(RecordError, match=r"tokens.json: .*unknown field\(s\) 'extra'"):
        records.TokensRecord.read(path)


def test_another_schema_version_or_kind_is_an_error(tmp_path):
    path = tmp_path / "probe.json"
    data = sample(records.ProbeRecord).to_json()
    path.write_text(json.dumps({**data, SCHEMA_KEY: "probe/0"}))
    with pytest.raises(RecordError, match=r"probe.json: field 'schema' is 'probe/0', expected 'probe/1'"):
        records.ProbeRecord.read(path)
    without = {k: v for k, v in data.items() if k != SCHEMA_KEY}  # a file written before records had schemas
    path.write_text(json.dumps(without))
    with pytest.raises(RecordError, match="field 'schema' is None"):
        records.ProbeRecord.read(path)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="expected 'sweep/1'"):  # a probe file given as a sweep record
        records.SweepRecord.read(path)


def test_a_file_that_is_not_a_record_is_named(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(RecordError, match="x.json: no such file"):
        TrainRecord.read(path)
    path.write_text("[1, 2]")
    with pytest.raises(RecordError, match="x.json: not a train record .*a list"):
        TrainRecord.read(path)
    path.write_text("{")
    with pytest.raises(RecordError, match="x.json: not JSON"):
        TrainRecord.read(path)


def test_records_are_frozen():
    record = sample(records.SweepRecord)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.steady_step_s = 1.0


def test_the_cpu_probe_writes_records_that_read_back(tmp_path):
    outs = [tmp_path / "gpus1.json", tmp_path / "gpus2.json"]
    records.probe.write_not_applicable(outs, [1, 2], {"model": "m"})
    for n, out in zip((1, 2), outs):
        record = records.ProbeRecord.read(out)
        assert record.world_size == n and record.max_train_batch_per_device is None
        assert record.not_applicable.startswith("no GPU") and record.encoder is None and record.work_s == 0.0


def test_the_cpu_probe_says_on_the_console_what_it_wrote(tmp_path, capsys):
    # it runs in the workflow's own process, without the job wrapper that prints every other job's line
    outs = [tmp_path / "gpus1.json", tmp_path / "gpus2.json"]
    records.probe.main_from_workflow(outs, [1, 2], '{"model": "m"}', tmp_path / "probe.log")
    said = capsys.readouterr().err
    assert said.startswith("[tier1] probe: no GPU") and "[1, 2]" in said
    assert (tmp_path / "probe.log").read_text() in said.replace("[tier1] probe: ", "")
