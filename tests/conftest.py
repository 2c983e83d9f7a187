"""Shared fixtures: the real data in ``../shared/data`` (skipped with a reason when absent)."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests run this checkout's code, never another clone's that an editable install points to:
# the checkout goes first on sys.path (and on PYTHONPATH, for the `vqa-pipe` and `dvc`
# subprocesses), and vqa_pipe binds pipeline/ and stages/ to the folders beside it.
if "vqa_pipe" not in sys.modules:
    sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)
import vqa_pipe.pipeline  # noqa: E402
import vqa_pipe.stages  # noqa: E402

import vqa_pipe  # noqa: E402

for _module in (vqa_pipe, vqa_pipe.pipeline, vqa_pipe.stages):
    if REPO not in Path(_module.__file__).resolve().parents:
        pytest.exit(
            f"{_module.__name__} is imported from {_module.__file__}, not from this checkout "
            f"({REPO}). Run the tests with `python -m pytest` from {REPO}, or reinstall with "
            "`pip install -e .` here.",
            returncode=4,
        )
SHARED = Path(os.environ.get("VQA_PIPE_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
NO_SHARED = f"real test data not found at {SHARED_DATA} (set VQA_PIPE_SHARED to its parent)"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(NO_SHARED)
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_videos(shared_data: Path) -> dict[str, dict]:
    """``samples.csv`` rows keyed by file name, each with an absolute ``path``."""
    folder = shared_data / "videos"
    with open(folder / "samples.csv", newline="", encoding="utf-8-sig") as fh:
        rows = {row["file"]: dict(row, path=folder / row["file"]) for row in csv.DictReader(fh)}
    return rows


@pytest.fixture(scope="session")
def tiny_video(sample_videos) -> Path:
    """The 192x144 Kinetics clip, smaller than one CLIP window."""
    return sample_videos["kinetics_FEQ-gdkTN4Q_000008_000018.mp4"]["path"]


@pytest.fixture(scope="session")
def portrait_video(sample_videos) -> Path:
    """The 406x720 portrait LSVQ clip."""
    return sample_videos["lsvq_1724.mp4"]["path"]
