"""poisondiff-lite: instance-level difficulty of targeted data poisoning (EPA, δ, τ) from clean training alone.

The public API in one place; each name lives in a small module with one job.
"""

from .attacks import ATTACKS, AttackConfig, Poisons, craft, poison_indices
from .config import TrainConfig, TrajectoryConfig
from .data import (DataBundle, ImageDataset, load_cifar10, load_dataset, load_tinyimagenet, register_dataset,
                   resolve_data_dir)
from . import exercises
from .errors import (DatasetCorruptError, DatasetNotFoundError, DeviceUnavailableError, InvalidChoiceError,
                     PoisonDiffError, ResultsFileError)
from .metrics import dps, epa, epa_buckets, per_class_mean, select_targets, soft_epa, trajectory_metrics
from .models import MODELS, build_model, register_model
from .shipped import shipped_studies, shipped_study
from .study import StudyConfig, StudyResults, find_studies, format_table, load_study, run_study
from .record import Trajectory, default_path, load_run_model, record_trajectories
from .train import History, accuracy, predict_logits, train_fresh, train_fresh_many, train_model
from .victims import HeadConfig, asr_interval, insert_poisons
from .utils import get_device, resolve_quick, resolve_results_dir, seed_everything, short_errors

__version__ = "0.1.0"

__all__ = [
    "ATTACKS", "AttackConfig", "HeadConfig", "Poisons", "StudyConfig", "StudyResults", "asr_interval", "craft",
    "exercises", "find_studies", "format_table", "insert_poisons", "load_study", "poison_indices", "register_dataset",
    "register_model", "run_study",
    "DataBundle", "DatasetCorruptError", "DatasetNotFoundError", "DeviceUnavailableError", "History", "ImageDataset",
    "InvalidChoiceError", "MODELS", "PoisonDiffError", "ResultsFileError", "TrainConfig", "Trajectory",
    "TrajectoryConfig", "accuracy", "build_model", "default_path", "dps", "epa", "epa_buckets", "get_device",
    "load_cifar10", "load_dataset", "load_run_model", "load_tinyimagenet", "per_class_mean", "predict_logits",
    "record_trajectories", "resolve_data_dir", "resolve_quick", "resolve_results_dir", "seed_everything",
    "select_targets", "shipped_studies", "shipped_study", "short_errors", "soft_epa", "train_fresh",
    "train_fresh_many", "train_model",
    "trajectory_metrics",
]
