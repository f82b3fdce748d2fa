"""One definition per record kind the stages write and the report and tools read: a frozen
dataclass each, with its schema version in the file, written through tier1.runtime.atomic and read
strictly (tier1.records.base). Torch-free."""

from tier1.records.base import Record, RecordError
from tier1.records.bench import BenchRecord
from tier1.records.check_gpus import CheckGpusRecord
from tier1.records.collectives import CollectivesRecord
from tier1.records.cosine import CosineRecord
from tier1.records.data import ManifestRecord, TokensRecord
from tier1.records.evaluation import EvaluationRecord
from tier1.records.preflight import PreflightRecord
from tier1.records.probe import ProbeRecord
from tier1.records.rank_compute import RankComputeRecord
from tier1.records.sweep import SweepRecord
from tier1.records.train import TrainRecord

__all__ = ["BenchRecord", "CheckGpusRecord", "CollectivesRecord", "CosineRecord", "EvaluationRecord", "ManifestRecord",
           "PreflightRecord", "ProbeRecord", "RankComputeRecord", "Record", "RecordError", "SweepRecord",
           "TokensRecord", "TrainRecord"]
