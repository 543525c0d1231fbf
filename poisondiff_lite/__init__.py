"""poisondiff-lite: instance-level difficulty of targeted data poisoning (EPA, δ, τ) from clean training alone.

The public API in one place, grouped as `__all__` lists it; each name lives in a small module with one job
(README, "Project layout"). Plots, the toy problem, widgets and exercises are the modules `plotting`, `toy`,
`widgets` and `exercises`.
"""

# data
from .data import DataBundle, ImageDataset, check_images, resolve_data_dir
from .datasets import load_dataset, register_dataset
from .loaders import load_cifar10, load_tinyimagenet

# training and recording
from .config import TrainConfig, TrajectoryConfig
from .models import MODELS, build_model, register_model
from .record import default_path, load_run_model, prepare_data, record_trajectories
from .trajectory import Trajectory
from .train import History, accuracy, predict_logits, train_fresh, train_fresh_many, train_model

# EPA, δ, τ
from .budget import TauSettings, budget_lower_bound, budget_matrix
from .distance import DeltaSearch, DistanceResult, distance_matrix, poisoning_distance
from .experiment import CleanExperiment, clean_experiment
from .metrics_table import target_metrics_csv
from .targets import target_rows
from .metrics import BUCKETS, dps, epa, epa_buckets, per_class_mean, select_targets, soft_epa, trajectory_metrics

# attacks and studies
from .attacks import ATTACKS, AttackConfig, Poisons, craft, poison_indices
from .evaluate import PoisonEvaluation, alignment, evaluate_poisons, feature_loss
from .results import CORRELATION_COLUMNS, StudyResults, find_studies, format_table, load_study
from .shipped import shipped_studies, shipped_study
from .study import run_study
from .study_config import StudyConfig, attack_id
from .victims import HeadConfig, asr_interval, insert_poisons

# errors and helpers
from .errors import (
    DatasetCorruptError,
    DatasetNotFoundError,
    DeviceUnavailableError,
    ExerciseNotSolved,
    InvalidChoiceError,
    PoisonDiffError,
    ResultsFileError,
)
from .utils import (
    check_flag,
    exercise_results_dir,
    get_device,
    resolve_quick,
    resolve_results_dir,
    seed_everything,
    short_errors,
)
from . import exercises
from .version import __version__  # noqa: F401  (pdl.__version__)

__all__ = [
    # data
    "DataBundle",
    "ImageDataset",
    "check_images",
    "load_cifar10",
    "load_dataset",
    "load_tinyimagenet",
    "register_dataset",
    "resolve_data_dir",
    # training and recording
    "History",
    "MODELS",
    "TrainConfig",
    "Trajectory",
    "TrajectoryConfig",
    "accuracy",
    "build_model",
    "default_path",
    "load_run_model",
    "prepare_data",
    "predict_logits",
    "record_trajectories",
    "register_model",
    "train_fresh",
    "train_fresh_many",
    "train_model",
    # EPA, δ, τ
    "BUCKETS",
    "CleanExperiment",
    "budget_lower_bound",
    "budget_matrix",
    "clean_experiment",
    "DeltaSearch",
    "DistanceResult",
    "distance_matrix",
    "dps",
    "epa",
    "epa_buckets",
    "per_class_mean",
    "poisoning_distance",
    "select_targets",
    "soft_epa",
    "TauSettings",
    "target_metrics_csv",
    "target_rows",
    "trajectory_metrics",
    # attacks and studies
    "CORRELATION_COLUMNS",
    "ATTACKS",
    "AttackConfig",
    "HeadConfig",
    "PoisonEvaluation",
    "Poisons",
    "StudyConfig",
    "StudyResults",
    "alignment",
    "asr_interval",
    "craft",
    "evaluate_poisons",
    "feature_loss",
    "find_studies",
    "format_table",
    "insert_poisons",
    "load_study",
    "poison_indices",
    "run_study",
    "shipped_studies",
    "shipped_study",
    "attack_id",
    # errors and helpers
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DeviceUnavailableError",
    "ExerciseNotSolved",
    "InvalidChoiceError",
    "PoisonDiffError",
    "ResultsFileError",
    "check_flag",
    "exercises",
    "get_device",
    "resolve_quick",
    "resolve_results_dir",
    "exercise_results_dir",
    "seed_everything",
    "short_errors",
]
