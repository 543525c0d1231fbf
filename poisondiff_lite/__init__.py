"""poisondiff-lite: instance-level difficulty of targeted data poisoning (EPA, δ, τ) from clean training alone.

The public API in one place; each name lives in a small module with one job.
"""

from .attacks import ATTACKS, AttackConfig, Poisons, craft, poison_indices
from .budget import budget_lower_bound, budget_matrix
from .config import TrainConfig, TrajectoryConfig
from .data import (DataBundle, ImageDataset, check_images, load_cifar10, load_dataset, load_tinyimagenet, register_dataset,
                   resolve_data_dir)
from .distance import distance_matrix, poisoning_distance
from . import exercises
from .errors import (DatasetCorruptError, DatasetNotFoundError, DeviceUnavailableError, InvalidChoiceError,
                     PoisonDiffError, ResultsFileError)
from .metrics import dps, epa, epa_buckets, per_class_mean, select_targets, soft_epa, trajectory_metrics
from .models import MODELS, build_model, register_model
from .shipped import shipped_studies, shipped_study
from .results import StudyResults, find_studies, format_table, load_study
from .study import run_study
from .study_config import StudyConfig
from .record import Trajectory, default_path, load_run_model, record_trajectories
from .train import History, accuracy, predict_logits, train_fresh, train_fresh_many, train_model
from .victims import HeadConfig, asr_interval, insert_poisons
from .utils import check_flag, get_device, resolve_quick, resolve_results_dir, seed_everything, short_errors

__version__ = "0.1.0"

__all__ = [  # sorted
    "accuracy", "asr_interval", "AttackConfig", "ATTACKS", "budget_lower_bound", "budget_matrix", "build_model",
    "check_flag", "check_images", "craft", "DataBundle", "DatasetCorruptError", "DatasetNotFoundError",
    "default_path", "DeviceUnavailableError", "distance_matrix", "dps", "epa", "epa_buckets", "exercises",
    "find_studies", "format_table", "get_device", "HeadConfig", "History", "ImageDataset", "insert_poisons",
    "InvalidChoiceError", "load_cifar10", "load_dataset", "load_run_model", "load_study", "load_tinyimagenet",
    "MODELS", "per_class_mean", "poison_indices", "PoisonDiffError", "poisoning_distance", "Poisons",
    "predict_logits", "record_trajectories", "register_dataset", "register_model", "resolve_data_dir",
    "resolve_quick", "resolve_results_dir", "ResultsFileError", "run_study", "seed_everything", "select_targets",
    "shipped_studies", "shipped_study", "short_errors", "soft_epa", "StudyConfig", "StudyResults", "train_fresh",
    "train_fresh_many", "train_model", "TrainConfig", "Trajectory", "trajectory_metrics", "TrajectoryConfig",
]
