"""The built-in demo dataset: clips decode, labels follow the documented rule, reruns skip."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest
from vqa_pipe.pipeline.datasets import read_labels
from vqa_pipe.pipeline.demo_clips import (
    CLIPS_PER_SCENE,
    LEVELS,
    SCENES,
    DemoError,
    demo_clips,
    demo_mos,
    make_demo_dataset,
)
from vqa_pipe.pipeline.manifest import read_manifest

SMALL = {"n_scenes": 2, "seconds": 1.0, "fps": 8, "size": (128, 96), "seed": 0}
N_FRAMES = 8


def decode(path: Path) -> tuple[list[np.ndarray], str, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.name, stream.codec_context.pix_fmt


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    return make_demo_dataset(out, **SMALL)


@pytest.fixture(scope="module")
def decoded(demo) -> dict[str, list[np.ndarray]]:
    return {row.video_id: decode(row.path)[0] for row in read_manifest(demo)}


@pytest.fixture(scope="module")
def labels(demo) -> dict[str, dict[str, str]]:
    with open(demo.parent / "labels.csv", newline="") as fh:
        return {row["video_id"]: row for row in csv.DictReader(fh)}


def test_documented_number_of_clips(demo):
    assert CLIPS_PER_SCENE == 16  # pristine + 5 distortions x 3 levels, as documented
    assert len(demo_clips(3)) == 48  # the default
    rows = read_manifest(demo)
    assert len(rows) == SMALL["n_scenes"] * CLIPS_PER_SCENE
    assert {row.video_id.split("__")[0] for row in rows} == set(SCENES[: SMALL["n_scenes"]])
    assert demo.name == "demo.csv"


def test_every_clip_decodes_with_expected_size_and_frames(demo):
    for row in read_manifest(demo):
        frames, codec, pix_fmt = decode(row.path)
        assert codec == "h264" and pix_fmt == "yuv420p", row.video_id
        assert len(frames) == N_FRAMES == row.n_frames, row.video_id
        assert frames[0].shape == (96, 128, 3), row.video_id
        assert (row.width, row.height, row.fps) == (128, 96, 8.0)


def test_labels_follow_the_documented_rule(demo, labels):
    rows = read_manifest(demo)
    assert all(row.mos_scale == "1-5" for row in rows)
    table = {"blur": (4.1, 3.2, 2.3), "noise": (4.2, 3.4, 2.6), "h264": (4.0, 3.0, 2.0),
             "dark": (4.3, 3.6, 2.9), "stutter": (4.4, 3.8, 3.2)}
    for row in rows:
        info = labels[row.video_id]
        level = int(info["level"])
        if info["distortion"] == "pristine":
            assert row.mos == 5.0 and level == 0
        else:
            assert row.mos == pytest.approx(table[info["distortion"]][level - 1])
        assert row.mos == pytest.approx(demo_mos(info["distortion"], level))
    for scene in SCENES[: SMALL["n_scenes"]]:
        for distortion in LEVELS:
            ladder = [5.0] + [
                next(r.mos for r in rows if r.video_id == f"{scene}__{distortion}_{k}")
                for k in (1, 2, 3)
            ]
            assert all(a > b for a, b in zip(ladder, ladder[1:], strict=False)), ladder


def _sharpness(frames: list[np.ndarray]) -> float:
    grey = np.stack(frames).astype(np.float64).mean(axis=-1)
    return float(np.abs(np.diff(grey, axis=2)).mean())


def _error(frames: list[np.ndarray], reference: list[np.ndarray]) -> float:
    return float(np.abs(np.stack(frames).astype(float) - np.stack(reference)).mean())


def test_distortions_are_real_and_grow_with_level(decoded):
    for scene in SCENES[: SMALL["n_scenes"]]:
        ref = decoded[f"{scene}__pristine"]
        clip = {f"{d}{k}": decoded[f"{scene}__{d}_{k}"] for d in LEVELS for k in (1, 2, 3)}
        sharp = [_sharpness(ref)] + [_sharpness(clip[f"blur{k}"]) for k in (1, 2, 3)]
        assert sharp == sorted(sharp, reverse=True), (scene, sharp)
        luma = [np.stack(ref).mean()] + [np.stack(clip[f"dark{k}"]).mean() for k in (1, 2, 3)]
        assert luma == sorted(luma, reverse=True), (scene, luma)
        for name in ("noise", "h264"):
            err = [_error(clip[f"{name}{k}"], ref) for k in (1, 2, 3)]
            assert err == sorted(err) and err[0] > 0.5, (scene, name, err)
        # stutter: frames held for 2/3/6 frames -> fewer distinct consecutive frames
        moving = []
        for k in (1, 2, 3):
            frames = np.stack(clip[f"stutter{k}"]).astype(float)
            moving.append(int((np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3)) > 1.0).sum()))
        assert moving[0] > moving[1] > moving[2], (scene, moving)


def test_rebuild_is_skipped_when_complete(demo):
    out = demo.parent
    before = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    assert make_demo_dataset(out, **SMALL) == demo
    after = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    assert before == after


def test_incomplete_or_changed_demo_is_rebuilt(tmp_path):
    params = dict(SMALL, n_scenes=1)
    manifest = make_demo_dataset(tmp_path, **params)
    victim = tmp_path / "clips" / "grace_hopper__blur_2.mp4"
    victim.unlink()
    make_demo_dataset(tmp_path, **params)
    assert len(decode(victim)[0]) == N_FRAMES
    # another seed changes the generated noise: the clips are regenerated
    noisy = tmp_path / "clips" / "grace_hopper__noise_3.mp4"
    old = noisy.read_bytes()
    assert make_demo_dataset(tmp_path, **dict(params, seed=1)) == manifest
    assert noisy.read_bytes() != old


def test_manifest_build_demo_rereads_the_folder(demo):
    table = read_labels("demo", demo.parent)
    assert table.rows == read_manifest(demo)
    assert table.mos_scale == "1-5"


def test_refuses_a_foreign_folder_and_bad_parameters(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoError, match="not empty"):
        make_demo_dataset(tmp_path, **SMALL)
    with pytest.raises(DemoError, match="even"):
        make_demo_dataset(tmp_path / "a", size=(127, 96))
    with pytest.raises(DemoError, match="n_scenes"):
        make_demo_dataset(tmp_path / "b", n_scenes=len(SCENES) + 1)
    with pytest.raises(DemoError, match="frames"):
        make_demo_dataset(tmp_path / "c", seconds=0.2, fps=10)


def test_first_scene_selects_other_scenes():
    from vqa_pipe.pipeline.demo_clips import SCENES, DemoError, demo_clips

    clips = demo_clips(2, first_scene=3)
    assert sorted({c.scene for c in clips}) == sorted(SCENES[3:5]) and len(clips) == 32
    with pytest.raises(DemoError, match="n_scenes must be 1..3 from scene 3"):
        demo_clips(4, first_scene=3)
