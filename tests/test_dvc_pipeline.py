"""The DVC DAG end to end on a tiny demo configuration, in a temporary git repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.slow


def _dvc() -> str | None:
    """dvc beside this Python (an unactivated venv's), else on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else shutil.which("dvc")


def _run(args: list[str], cwd: Path) -> str:
    if args[0] == "dvc":
        args = [_dvc(), *args[1:]]
    env = dict(os.environ)  # the venv's scripts (vqa-pipe) first, as an activated venv would
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture()
def tiny_project(tmp_path) -> Path:
    if _dvc() is None:
        pytest.skip("dvc is not installed (pip install -e '.[test]' installs it)")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"] = ["demo"]
    params["regressors"] = ["svr", "ridge"]
    params["demo_sets"] = {"demo": {"first_scene": 0, "scenes": 2}}
    params["data"] = {"demo": params["data"]["demo"]}
    params["train"]["splits"] = 3
    params["showcase"] = {"dataset": "demo", "regressor": "ridge", "scores": "demo"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], project)
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], project)
    return project


def test_repro_then_only_touched_stages_rerun(tiny_project):
    """One pipeline, changed twice: a regressor setting, then an extract setting."""
    first = _run(["dvc", "repro"], tiny_project)
    assert _ran(first) == {
        "demo@demo", "manifest@demo", "extract@demo", "train@demo-svr",
        "train@demo-ridge", "report", "export", "score",
    }
    metrics = json.loads((tiny_project / "reports" / "metrics.json").read_text())
    assert metrics["random_weights"] is True
    for regressor in ("svr", "ridge"):
        cell = metrics[regressor]["demo"]["demo"]
        assert all(isinstance(cell[k], float) and -1 <= cell[k] <= 1 for k in ("srocc", "plcc"))
    assert "RANDOM WEIGHTS" in (tiny_project / "reports" / "cross_dataset.md").read_text()
    run_metrics = json.loads((tiny_project / "runs/demo/svr/metrics.json").read_text())
    assert any("RANDOM WEIGHTS" in note for note in run_metrics["notes"])
    assert "RANDOM WEIGHTS" in (tiny_project / "runs/demo/svr/summary.txt").read_text()
    assert "up to date" in _run(["dvc", "status"], tiny_project)
    scores = (tiny_project / "scores" / "demo" / "scores.csv").read_text().splitlines()
    assert len(scores) == 1 + 32 and "RANDOM WEIGHTS" in (
        tiny_project / "reports" / "score_demo" / "index.html").read_text()

    # change one regressor setting: only its training and the evaluation rerun
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["regressor"]["svr"]["epsilon"] = 0.2
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run(["dvc", "status"], tiny_project)
    assert "train@demo-svr" in status and "extract@demo" not in status
    second = _run(["dvc", "repro"], tiny_project)
    assert _ran(second) == {"train@demo-svr", "report"}  # export/score use ridge
    assert json.loads((tiny_project / "runs/demo/svr/metrics.json").read_text())["params"][
        "epsilon"
    ] == 0.2

    # change one extract setting: the store is replaced and everything downstream reruns
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["extract"]["grid"] = "2x2"
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = _run(["dvc", "repro"], tiny_project)
    assert _ran(again) == {"extract@demo", "train@demo-svr", "train@demo-ridge", "report",
                           "export", "score"}
    assert "replacing 'semantic' in features/demo.zarr" in again
    from vqa_pipe.pipeline.store import FeatureStore

    store = FeatureStore.open(tiny_project / "features" / "demo.zarr")
    assert store.branch_config("semantic")["grid"] == [2, 2]
    emb = store.read("semantic", "window_embeddings")
    assert all(e.shape[1] == 4 for e in emb.values())
