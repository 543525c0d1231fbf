"""Small shared helpers: devices, seeds, progress bars, atomic writes, quick-mode resolution."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import (
    DeviceUnavailableError,
    InvalidChoiceError,
    PoisonDiffError,
    ResultsFileError,
    check_choice,
    check_seed,
)

T = TypeVar("T")

QUICK_ENV = "POISONDIFF_QUICK"
RESULTS_ENV = "POISONDIFF_RESULTS"


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto" | "cpu" | "cuda" | "cuda:N"`` to a `torch.device`.

    ``"auto"`` picks CUDA when present. Asking for CUDA on a machine without it raises a clear error.
    """
    if isinstance(device, torch.device):
        device = str(device)
    device = str(device).lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_choice("device", device.split(":")[0], ["auto", "cpu", "cuda"])
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {device!r} was requested but this machine has no usable CUDA GPU; "
            'use DEVICE="cpu" (or "auto") to run on the CPU'
        )
    return torch.device(device)


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Copy a CPU tensor to `device`; on CUDA through pinned memory, so the host does not wait for the GPU."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run a block with `model` in eval mode; its train/eval mode is restored afterwards, also after an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); a seed that is not an integer (``"abc"``, 1.5) is an error."""
    check_seed("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_quick(quick: bool | None = None, device: torch.device | None = None) -> bool:
    """Decide quick mode: an explicit bool wins, then ``POISONDIFF_QUICK``, then "quick unless a GPU is present"."""
    if quick is not None:
        return check_flag("QUICK", quick)
    env = os.environ.get(QUICK_ENV)
    if env is not None and env.strip() != "":
        return env.strip().lower() not in {"0", "false", "no", "off"}
    if device is not None:
        return device.type != "cuda"
    return not torch.cuda.is_available()


def format_number(value: float, spec: str = ".8g") -> str:
    """`value` formatted with `spec`, and the non-finite ones always as "inf", "-inf" or "nan" (CSV, tables, text)."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def check_flag(name: str, value: Any) -> bool:
    """A yes/no parameter as a bool: True/False, 1/0, or the strings papermill's ``-r`` passes ("true", "no", ...).

    Anything else (``"maybe"``, 2, None) is an error naming the choices, never silently truthy.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
        return value.strip().lower() in {"true", "1", "yes", "on"}
    raise InvalidChoiceError(f"{name} must be True or False, got {value!r}")


def exercise_results_dir(results_dir: str | os.PathLike | None = None) -> Path:
    """A new temporary results folder for an exercise: its ``trajectories`` links to the results folder's, so it
    reads the saved clean experiments, while the studies and tables it writes stay out of the results folder that
    later notebooks read."""
    trajectories = resolve_results_dir(results_dir) / "trajectories"
    trajectories.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="poisondiff-exercise-"))
    (folder / "trajectories").symlink_to(trajectories.resolve(), target_is_directory=True)
    return folder


def resolve_results_dir(results_dir: str | os.PathLike | None = None) -> Path:
    """Where experiments are saved: the argument, then ``POISONDIFF_RESULTS``, then ``results/`` in the project."""
    if results_dir is not None:
        path = Path(results_dir)
    elif os.environ.get(RESULTS_ENV):
        path = Path(os.environ[RESULTS_ENV])
    else:
        path = project_root() / "results"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsFileError(
            f"cannot create the results folder {path} ({exc.strerror or exc}). Fix: choose "
            f"another with --results-dir / POISONDIFF_RESULTS / RESULTS_DIR."
        ) from None
    return path


def project_root() -> Path:
    """The source checkout holding this package, or the working directory for a plain install."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd()


def progress(iterable: Iterable[T], *, enable: bool = True, **kwargs: Any) -> Iterable[T]:
    """Wrap an iterable in a `tqdm.auto` bar (notebook widget or terminal); ``enable=False`` gives no bar.

    With ``enable=True`` the environment still decides: ``TQDM_DISABLE=1`` (as CI sets) silences every bar.
    """
    if not check_flag("progress (INTERACTIVE / show_progress)", enable):
        kwargs["disable"] = True
    return tqdm(iterable, mininterval=0.5, dynamic_ncols=True, **kwargs)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Write a file through ``write(fileobj)`` into a temporary sibling, fsync, then rename over `path`.

    A crash mid-write leaves the old file (or none) in place, never a half-written one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the user's usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise
    return path


def _umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unwritable(path: Path, exc: OSError) -> ResultsFileError:
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return ResultsFileError(f"{path} is a folder, not a file. Fix: name a file, e.g. {path / 'out.csv'}.")
    return ResultsFileError(
        f"could not write {path} ({exc.strerror or exc}). Fix: free disk space or choose a "
        f"writable results folder (--results-dir / POISONDIFF_RESULTS); work already saved is "
        f"kept."
    )


RESULTS_FIX = "choose another with --results-dir / POISONDIFF_RESULTS / RESULTS_DIR, or fix its permissions"


def check_writable(folder: str | os.PathLike, *, what: str = "the results folder", fix: str = RESULTS_FIX) -> Path:
    """Create `folder` if needed and make sure files can be written in it, before any long computation starts.

    `what` names the folder and `fix` the way to change it, in the words of the caller (a CLI option, a parameter)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ResultsFileError(f"{what} {folder} is a file, not a folder. Fix: {fix}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ResultsFileError(f"{what} {folder} is not writable ({exc.strerror or exc}). Fix: {fix}.") from None
    return folder


def atomic_write_csv(
    path: str | os.PathLike, rows: Iterable[dict], fieldnames: Sequence[str], *, ignore_extra: bool = False
) -> Path:
    """Atomically write `rows` as a CSV with a header; keys outside `fieldnames` are an error unless `ignore_extra`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), extrasaction="ignore" if ignore_extra else "raise")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=False)


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """Parse a JSON file this package wrote; a missing, truncated or damaged one is a one-line `ResultsFileError`
    ending in `fix`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsFileError(f"{path} is not readable ({type(exc).__name__}: {str(exc)[:100]}). Fix: {fix}") from None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), binary=False)


def short_errors() -> None:
    """In IPython/Jupyter, show errors the user can fix (`PoisonDiffError`) as one line instead of a traceback.

    The cell still fails (papermill and nbval see the error); only the display is shortened. Outside IPython: no-op.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def one_line(shell, etype, value, tb, tb_offset=None):
        shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])

    shell.set_custom_exc((PoisonDiffError,), one_line)


@contextmanager
def exclusive(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the one-writer lock of `path` (a file or folder) while the block runs; another holder is an error.

    The lock is ``<path>.lock`` (a folder's is ``<folder>/.lock``), taken with `filelock`, so it is released when the
    process ends, however it ends. Who holds it (pid, host, since when) is in ``<lock>.owner`` for the error message.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_path = path / ".lock" if path.is_dir() else path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    owner = lock_path.with_name(lock_path.name + ".owner")
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = json.loads(owner.read_text())
            who = f"process {holder['pid']} on {holder['host']}, since {holder['since']}"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise ResultsFileError(
            f"{what} {path} is being written by {who}. Fix: wait for it to finish (or stop it), "
            f"or use another results folder / output file."
        ) from None
    try:
        import datetime as dt
        import platform

        owner.write_text(
            json.dumps(
                {"pid": os.getpid(), "host": platform.node(), "since": dt.datetime.now().isoformat(timespec="seconds")}
            )
        )
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
