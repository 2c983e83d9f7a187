"""export and score end to end: a bundle from a tiny demo run scores real videos, explains
them, refuses other weights, reproduces the run's own predictions; zero-shot scoring."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from vqa_pipe.pipeline.bundle import BundleError, load_bundle
from vqa_pipe.pipeline.clip_model import load_clip
from vqa_pipe.pipeline.layout import Layout
from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
from vqa_pipe.pipeline.prompts import load_prompts
from vqa_pipe.pipeline.store import FeatureStore
from vqa_pipe.stages.demo import make_demo_data
from vqa_pipe.stages.export import fit_final, run_export
from vqa_pipe.stages.extract import build_branches, run_extract
from vqa_pipe.stages.manifest import ManifestParams
from vqa_pipe.stages.manifest import run as build_manifest
from vqa_pipe.stages.score import ScoreError, ScoreOptions, collect_inputs, run_score
from vqa_pipe.stages.train import DatasetRef, TrainOptions, run_train

from vqa_pipe.cli import main

TINY = dict(clip_model="vqa-tiny-clip", fps=1.0, max_frames=2)
GOOD = ["konvid_10053703034.mp4", "lsvq_1724.mp4", "kinetics_FEQ-gdkTN4Q_000008_000018.mp4"]


def _quiet(message: str) -> None:
    pass


def _train(layout: Layout, manifest: Path, name: str, regressor: str = "ridge",
           params: dict | None = None, **branch_options) -> Path:
    branches = build_branches(["semantic"], **{**TINY, **branch_options})
    store = layout.store(name)
    run_extract(manifest, store, branches, progress=False, log=_quiet)
    run_dir = layout.run(name, regressor)
    run_train(DatasetRef(store=store, manifest=manifest, name=name), run_dir,
              TrainOptions(regressor=regressor, splits=2, test_ratio=0.3, params=params or {},
                           clip_frames=4))
    return run_dir


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One demo scene (16 clips) with its manifest, and a ridge run on tiny random-weights
    CLIP features."""
    layout = Layout(tmp_path_factory.mktemp("project"))
    data = make_demo_data("demo", scenes=1, first_scene=0, layout=layout)
    manifest = build_manifest(
        ManifestParams(dataset="demo", root=data, out=layout.manifest("demo"))
    ).out
    run_dir = _train(layout, manifest, "demo", random_weights=True)
    return layout, manifest, run_dir


@pytest.fixture(scope="module")
def bundle(project):
    layout, _, run_dir = project
    return run_export(run_dir, layout.model("demo", "ridge"), log=_quiet)


@pytest.fixture()
def videos(tmp_path, sample_videos):
    """Three good real videos (landscape, portrait, smaller than a window) and a truncated one
    in a folder."""
    folder = tmp_path / "upload"
    folder.mkdir()
    for name in GOOD:
        os.symlink(sample_videos[name]["path"], folder / name)
    data = Path(sample_videos["lsvq_17734.mp4"]["path"]).read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return folder


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as fh:
        return {r["video"]: r for r in csv.DictReader(fh)}


def _ok(result) -> str:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_export_writes_a_self_contained_bundle(bundle, project, tmp_path):
    layout, _, run_dir = project
    meta = bundle.meta
    assert bundle.random_weights and meta["regressor"] == "ridge"
    assert bundle.members == ["split00", "split01"] and meta["ensemble"].startswith("mean")
    assert meta["training"]["mos_scale"] == "1-5" and meta["training"]["n_videos"] == 16
    config = FeatureStore.open(layout.store("demo")).branch_config("semantic")
    assert bundle.branch_config("semantic") == json.loads(json.dumps(config))
    text = FeatureStore.open(layout.store("demo")).branch_array("semantic", "text_embeddings")
    np.testing.assert_array_equal(bundle.branch_arrays("semantic")["text_embeddings"], text)
    r = len(config["feature_names"]) // 2
    stats = bundle.stats()
    assert stats["semantic_flat.mean"].shape == stats["role.flat.std"].shape == (4 * r,)
    prompts = load_prompts(bundle.prompts_file("semantic"))
    assert list(prompts.texts) == config["prompts"]["texts"]
    assert not list(bundle.path.rglob("*.pkl")) and not list(bundle.path.rglob("*.pt"))
    card = (bundle.path / "README.md").read_text()
    assert "RANDOM WEIGHTS" in card and "1-5" in card and "SROCC" in card
    out = _ok(CliRunner().invoke(main, ["inspect", str(bundle.path)]))
    assert "RANDOM WEIGHTS" in out and "split00, split01" in out and "vqa-tiny-clip" in out
    # the bundle is self-contained: it scores after the run and its store are gone
    shutil.copytree(bundle.path, tmp_path / "m")
    assert load_bundle(tmp_path / "m").load_models()[0].name == "ridge"


def _half_unit(value: float, digits: int = 6) -> float:
    """Half a unit in the last place of ``value`` written with ``digits`` significant digits."""
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(value) or 1.0)) - digits + 1)


def test_score_good_videos_and_a_truncated_one(bundle, videos, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report"
    args = ["score", str(bundle.path), str(videos), "--random-weights", "--out", str(out),
            "--report", str(report), "--json", "--no-progress"]
    printed = _ok(CliRunner().invoke(main, args))
    assert "RANDOM WEIGHTS" in printed and "3 of 4 videos scored" in printed
    rows = _rows(out / "scores.csv")
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 3 and all(np.isfinite(float(r["score"])) for r in ok)
    assert all(r["scale"] == "1-5" and r["random_weights"] == "true" for r in rows.values())
    assert rows["truncated"]["status"] == "failed" and "truncated.mp4" in rows["truncated"]["error"]
    for r in ok:
        # both columns are written to 6 significant digits: allow each one's rounding
        score, score_100 = float(r["score"]), float(r["score_100"])
        assert score_100 == pytest.approx((score - 1) * 25,
                                          abs=25 * _half_unit(score) + _half_unit(score_100))
        assert r["deviations"] and r["contributions"]
    data = json.loads((out / "scores.json").read_text())
    assert data["model"]["random_weights"] is True
    for video in data["videos"]:
        if video["status"] != "ok":
            assert video["error"] and video["explanation"] is None
            continue
        exp = video["explanation"]
        assert len(exp["deviations"]) == 34 and len(exp["contributions"]) == 34
        assert exp["contributions_exact"] is True  # ridge
        assert len(exp["frame_curve"]) == len(exp["frame_times"]) >= 1
        # linear model: the contributions and the reference add up to the score
        total = exp["reference"] + sum(c["contribution"] for c in exp["contributions"])
        assert total == pytest.approx(video["score"], abs=1e-4)
        assert Path(video["report"]).is_file()
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == sorted(Path(n).stem + ".png" for n in GOOD)
    index = (report / "index.html").read_text()
    assert "RANDOM WEIGHTS" in index and "truncated" in index and index.count("<img") == 3

    # a rerun skips done videos (nothing is extracted again) and gives the same scores
    again = _ok(CliRunner().invoke(main, args))
    assert "(0 extracted, 3 from the cache, 1 failed)" in again
    assert _rows(out / "scores.csv") == rows
    # a video whose file changed under the same name is extracted again
    (videos / GOOD[0]).unlink()
    os.symlink(Path(os.readlink(videos / GOOD[1])), videos / GOOD[0])
    changed = _ok(CliRunner().invoke(main, args))
    assert "(1 extracted, 2 from the cache, 1 failed)" in changed
    new = _rows(out / "scores.csv")
    assert new[Path(GOOD[0]).stem]["score"] == new[Path(GOOD[1]).stem]["score"]
    # --strict: any failure is an error exit; nothing scored at all is one without it
    strict = CliRunner().invoke(main, args + ["--strict"])
    assert strict.exit_code == 1
    bad = CliRunner().invoke(main, ["score", str(bundle.path), str(videos / "truncated.mp4"),
                                    "--random-weights", "--out", str(tmp_path / "o2"),
                                    "--no-progress"])
    assert bad.exit_code == 1 and "0 of 1 videos scored" in bad.output


def test_a_random_weights_bundle_needs_the_flag(bundle, tiny_video, tmp_path):
    result = CliRunner().invoke(main, ["score", str(bundle.path), str(tiny_video),
                                       "--out", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 1
    assert "RANDOM" in result.output and "--random-weights" in result.output
    forgot = CliRunner().invoke(main, ["score", str(tiny_video), str(tiny_video)])
    assert forgot.exit_code == 1 and "--zero-shot" in forgot.output


def test_scoring_the_training_videos_reproduces_the_run(project, tmp_path):
    """Same videos, same configuration: the same features and the run's own predictions."""
    layout, manifest, run_dir = project
    single = run_export(run_dir, tmp_path / "split00", members="split00", log=_quiet)
    out = tmp_path / "out"
    printed = _ok(CliRunner().invoke(main, [
        "score", str(single.path), str(manifest), "--random-weights", "--out", str(out),
        "--no-progress"]))
    assert "have a MOS: SROCC" in printed  # the manifest's MOS are used for a check
    rows = _rows(out / "scores.csv")
    with open(run_dir / "predictions.csv", newline="") as fh:
        run = [r for r in csv.DictReader(fh) if r["split"] == "split00"]
    assert len(run) >= 4
    for r in run:
        score = float(rows[r["video_id"]]["score"])  # 6 significant digits in the CSV
        assert score == pytest.approx(float(r["prediction"]), abs=1e-5 + _half_unit(score))
    cached = FeatureStore.open(out / "features.zarr").read("semantic", "frame_scores")
    trained = FeatureStore.open(layout.store("demo")).read("semantic", "frame_scores")
    for vid in trained:
        np.testing.assert_allclose(cached[vid], trained[vid], atol=1e-6)


def test_final_model_is_exported_when_the_run_has_one(project, tmp_path):
    _, _, run_dir = project
    folder = fit_final(run_dir, log=_quiet)
    try:
        info = json.loads((folder / "final.json").read_text())
        assert info["n_train"] + info["n_val"] == 16 and info["n_val"] >= 2
        final = run_export(run_dir, tmp_path / "final", log=_quiet)
        assert final.members == ["final"] and final.meta["member_kind"] == "final"
        ensemble = run_export(run_dir, tmp_path / "ens", members="ensemble", log=_quiet)
        assert ensemble.members == ["split00", "split01"]
        with pytest.raises(BundleError, match="no split model 'split07'"):
            run_export(run_dir, tmp_path / "x", members="split07", log=_quiet)
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def checkpoint_bundle(project, tmp_path_factory):
    """A bundle trained on tiny-CLIP features made with a checkpoint *file* (seeded weights
    saved to disk), exported with that file recorded."""
    from safetensors.torch import save_file

    layout, manifest, _ = project
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for seed in (1, 2):
        state = load_clip("vqa-tiny-clip", random_weights=True, seed=seed).model.state_dict()
        paths[seed] = folder / f"tiny-{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(paths[seed]))
    run_dir = _train(layout, manifest, "demo_file", clip_pretrained=str(paths[1]))
    bundle = run_export(run_dir, layout.model("demo_file", "ridge"),
                        clip_pretrained=str(paths[1]), log=_quiet)
    return bundle, paths


def test_weights_with_another_sha256_are_refused(checkpoint_bundle, tiny_video, tmp_path):
    bundle, paths = checkpoint_bundle
    assert not bundle.random_weights
    assert bundle.meta["branches"]["semantic"]["weights"]["path"] == str(paths[1].resolve())
    wrong = CliRunner().invoke(main, ["score", str(bundle.path), str(tiny_video), "--out",
                                      str(tmp_path / "a"), "--clip-pretrained", str(paths[2]),
                                      "--no-progress"])
    assert wrong.exit_code == 1 and "sha256" in wrong.output and "differ" in wrong.output
    assert not (tmp_path / "a" / "features.zarr").exists()  # refused before any work
    random = CliRunner().invoke(main, ["score", str(bundle.path), str(tiny_video), "--out",
                                       str(tmp_path / "b"), "--random-weights", "--no-progress"])
    assert random.exit_code == 1 and "real 'semantic' weights" in random.output
    # export refuses to record a checkpoint that is not the store's
    with pytest.raises(BundleError, match="is not the 'semantic' checkpoint"):
        run_export(bundle.meta["run"], tmp_path / "x", clip_pretrained=str(paths[2]),
                   log=_quiet)
    # the recorded file is found without being named again
    out = _ok(CliRunner().invoke(main, ["score", str(bundle.path), str(tiny_video), "--out",
                                        str(tmp_path / "c"), "--no-progress"]))
    assert "RANDOM" not in out
    assert _rows(tmp_path / "c" / "scores.csv")[tiny_video.stem]["random_weights"] == "false"


def test_zero_shot_is_clip_iqa_over_windows_and_frames(sample_videos, tmp_path):
    vids = [sample_videos[n]["path"] for n in GOOD[:2]]
    out, report = tmp_path / "zs", tmp_path / "zr"
    printed = _ok(CliRunner().invoke(main, [
        "score", "--zero-shot", *map(str, vids), "--clip-model", "vqa-tiny-clip",
        "--random-weights", "--out", str(out), "--report", str(report), "--no-progress"]))
    assert "RANDOM WEIGHTS" in printed and "2 of 2 videos scored" in printed
    rows = _rows(out / "scores.csv")
    store = FeatureStore.open(out / "features.zarr")
    config = store.branch_config("semantic")
    assert config["softmax"] == "pairs" and config["prompts"]["name"] == "clipiqa"
    emb = store.read("semantic", "window_embeddings")
    text = store.branch_array("semantic", "text_embeddings")
    for vid, r in rows.items():
        assert r["scale"] == "0-1" and 0 <= float(r["score"]) <= 1
        assert "Sharp" in r["deviations"] and r["contributions"] == ""
        # by hand: softmax over (Good, Bad) of the scaled cosines, mean over windows, frames
        logits = config["logit_scale"] * emb[vid].astype(np.float32) @ text[:2].T
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p_good = (p[..., 0] / p.sum(-1)).mean()
        assert float(r["score"]) == pytest.approx(p_good, abs=1e-5)
        score_100 = float(r["score_100"])  # 6 significant digits in the CSV
        assert score_100 == pytest.approx(100 * p_good, abs=100 * 1e-5 + _half_unit(score_100))
    assert len(list(report.glob("*.png"))) == 2 and (report / "index.html").is_file()
    with pytest.raises(ScoreError, match="zero-shot"):
        run_score("models/x", vids, ScoreOptions(zero_shot=True))


def test_collect_inputs(tmp_path, tiny_video):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    for rel in ("a/clip.mp4", "a/sub/clip.MKV", "b/clip.mp4", "a/notes.txt", "a/.hidden.mp4"):
        (tmp_path / rel).write_bytes(b"x")
    manifest = write_manifest([ManifestRow("m1", tiny_video, 3.0, "1-5")], tmp_path / "m.csv")
    items = collect_inputs([tmp_path / "a", tmp_path / "b" / "clip.mp4", manifest,
                            tmp_path / "a" / "clip.mp4", tmp_path / "gone.mp4"])
    ids = [i.video_id for i in items]
    assert ids[0] == "m1" and items[0].mos == 3.0
    assert sorted(ids[1:]) == sorted(["a/clip", "sub/clip", "b/clip", "gone"])
    assert len(ids) == len(set(ids)) == 5  # a/clip.mp4 given twice is scored once
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoreError, match="holds no video files"):
        collect_inputs([tmp_path / "empty"])


def test_export_refuses_a_run_whose_store_was_extracted_again_differently(project, tmp_path):
    """The store a run points to was replaced with other features after training: the bundle
    would record a configuration the model never saw, so export refuses and says what
    changed."""
    _, manifest, _ = project
    layout = Layout(tmp_path)
    run_dir = _train(layout, manifest, "demo", random_weights=True)
    other = build_branches(["semantic"], **{**TINY, "grid": (2, 2)}, random_weights=True)
    run_extract(manifest, layout.store("demo"), other, progress=False, log=_quiet,
                on_config_change="replace")
    with pytest.raises(BundleError, match="no longer holds the features.*grid"):
        run_export(run_dir, tmp_path / "bundle", log=_quiet)
    assert not (tmp_path / "bundle").exists()


def test_a_frame_view_only_clipvqa_model_exports_and_scores(project, tiny_video, tmp_path):
    """CLIPVQA's features alone (the frame view, no windows, no description scores): the
    bundle records no prompts, and scoring gives a score without description explanations."""
    from helpers import FAST_CLIPVQA

    _, manifest, _ = project
    layout = Layout(tmp_path)
    run_dir = _train(layout, manifest, "frames", "clipvqa", dict(FAST_CLIPVQA, epochs=2),
                     random_weights=True, views=("frame",), clip_tokens=True)
    bundle = run_export(run_dir, tmp_path / "bundle", log=_quiet)
    assert bundle.meta["regressor"] == "clipvqa"
    assert "prompts" not in bundle.branch_config("semantic")
    printed = _ok(CliRunner().invoke(main, [
        "score", str(bundle.path), str(tiny_video), "--random-weights", "--out",
        str(tmp_path / "scores"), "--report", str(tmp_path / "r"), "--no-progress"]))
    assert "1 of 1 videos scored" in printed
    row = _rows(tmp_path / "scores" / "scores.csv")[tiny_video.stem]
    assert row["status"] == "ok" and np.isfinite(float(row["score"]))
    assert row["deviations"] == "" and row["contributions"] == ""
    assert (tmp_path / "r" / "index.html").is_file()  # written for a single video too
