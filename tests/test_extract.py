"""Stage one end to end on real videos with a tiny random-weights CLIP (the real code path)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
from vqa_pipe.pipeline.prompts import score_windows
from vqa_pipe.pipeline.store import FeatureStore, StoreError
from vqa_pipe.stages.extract import build_branches, run_extract

from vqa_pipe.cli import main

REAL = ["konvid_10053703034.mp4", "lsvq_1724.mp4", "kinetics_FEQ-gdkTN4Q_000008_000018.mp4"]
TINY = dict(clip_model="vqa-tiny-clip", random_weights=True, fps=1.0, max_frames=4)


@pytest.fixture(scope="module")
def branches():
    return build_branches(["semantic"], **TINY)


@pytest.fixture()
def videos(tmp_path, sample_videos):
    """Three real videos (landscape, portrait, tiny) plus a corrupt and a missing file."""
    folder = tmp_path / "videos"
    folder.mkdir()
    rows = []
    for name in REAL:
        src = sample_videos[name]
        dst = folder / name
        os.symlink(src["path"], dst)
        rows.append(
            ManifestRow(
                dst.stem, dst, float(src["mos"]) if src["mos"] else None, src["mos_scale"] or None
            )
        )
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    rows.append(ManifestRow("corrupt", corrupt, 3.0, "1-5"))
    rows.append(ManifestRow("missing", folder / "missing.mp4", 3.0, "1-5"))
    manifest = write_manifest(rows, tmp_path / "m.csv")
    return manifest, [r.video_id for r in rows]


def test_extracts_good_videos_and_records_bad_ones(tmp_path, videos, branches, sample_videos):
    manifest, ids = videos
    summary = run_extract(manifest, tmp_path / "s.zarr", branches, part_size=2, progress=False)
    assert sorted(summary.done) == sorted(ids[:3])
    assert set(summary.failed) == {"corrupt", "missing"}
    assert "corrupt.mp4" in summary.failed["corrupt"]
    assert "missing.mp4" in summary.failed["missing"]
    assert summary.random_weights and "RANDOM WEIGHTS" in summary.lines()[0]

    store = FeatureStore.open(tmp_path / "s.zarr")
    status = store.status("semantic")
    assert status["corrupt"].state == "failed" and status["missing"].state == "failed"
    scores = store.read("semantic", "frame_scores")
    emb = store.read("semantic", "window_embeddings")
    times = store.read("semantic", "frame_times")
    r = len(store.branch_config("semantic")["prompts"]["texts"])
    for vid in ids[:3]:
        n = scores[vid].shape[0]
        assert 1 <= n <= 4  # 1 frame per second, capped at 4
        assert scores[vid].shape == (n, 2 * r) and emb[vid].shape == (n, 9, 64)
        assert emb[vid].dtype == np.float16 and np.all(np.diff(times[vid]) > 0)
        # avg <= max, probabilities in [0, 1]
        assert np.all(scores[vid][:, :r] <= scores[vid][:, r:] + 1e-6)
        assert scores[vid].min() >= 0 and scores[vid].max() <= 1
    # the cached embeddings re-score to exactly the stored features
    config = store.branch_config("semantic")
    text = store.branch_array("semantic", "text_embeddings")
    again = score_windows(emb[ids[0]], text, config["logit_scale"], branches[0].groups)
    np.testing.assert_allclose(again, scores[ids[0]], rtol=1e-5, atol=1e-6)
    # different windows of a real frame give different embeddings
    assert np.abs(emb[ids[0]][0, 0].astype(float) - emb[ids[0]][0, 8].astype(float)).max() > 1e-3


def test_rerun_skips_done_and_retry_keeps_written_work(tmp_path, videos, branches, sample_videos):
    manifest, ids = videos
    store_path = tmp_path / "s.zarr"
    run_extract(manifest, store_path, branches, part_size=2, progress=False)
    before = FeatureStore.open(store_path).read("semantic", "frame_scores")

    again = run_extract(manifest, store_path, branches, part_size=2, progress=False)
    assert again.done == [] and again.skipped == 5 and again.failed == {}

    # the missing file appears: --retry-failed redoes only failed videos, keeps the rest
    shutil.copy(sample_videos[REAL[0]]["path"], manifest.parent / "videos" / "missing.mp4")
    retry = run_extract(
        manifest, store_path, branches, part_size=2, progress=False, retry_failed=True
    )
    assert sorted(retry.done) == ["missing"] and set(retry.failed) == {"corrupt"}
    after = FeatureStore.open(store_path).read("semantic", "frame_scores")
    for vid in before:
        np.testing.assert_array_equal(before[vid], after[vid])
    np.testing.assert_allclose(after["missing"], after[ids[0]], atol=1e-6)  # same video content


def test_a_crash_loses_only_the_part_in_flight(tmp_path, videos, branches):
    manifest, ids = videos
    store_path = tmp_path / "s.zarr"

    class Crash(Exception):
        pass

    semantic = branches[0]
    real_finish = semantic.finish_video
    calls = []

    def crashing_finish(state):
        calls.append(state.key)
        if len(calls) == 3:  # first video of the second part
            raise KeyboardInterrupt
        return real_finish(state)

    semantic.finish_video = crashing_finish
    try:
        with pytest.raises(KeyboardInterrupt):
            run_extract(manifest, store_path, branches, part_size=2, progress=False)
    finally:
        del semantic.finish_video
    store = FeatureStore.open(store_path)
    assert store.part_complete("semantic", 0) and not store.part_complete("semantic", 1)
    resumed = run_extract(manifest, store_path, branches, part_size=2, progress=False)
    assert resumed.skipped == 2 and sorted(resumed.done + list(resumed.failed)) == sorted(ids[2:])


def test_another_configuration_is_refused(tmp_path, videos, branches):
    manifest, _ = videos
    run_extract(manifest, tmp_path / "s.zarr", branches, part_size=2, progress=False)
    other = build_branches(["semantic"], **{**TINY, "max_frames": 2})
    with pytest.raises(StoreError, match="sampling.max_frames: 4 -> 2"):
        run_extract(manifest, tmp_path / "s.zarr", other, part_size=2, progress=False)


def test_hanging_decoder_times_out_and_the_run_goes_on(tmp_path, sample_videos, branches):
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # open() blocks forever: no writer
    good = sample_videos[REAL[2]]["path"]
    rows = [ManifestRow("hang", fifo, 3.0, "1-5"), ManifestRow("good", good, 3.0, "1-5")]
    manifest = write_manifest(rows, tmp_path / "m.csv")
    summary = run_extract(manifest, tmp_path / "s.zarr", branches, timeout=3, progress=False)
    assert summary.done == ["good"]
    assert "hang.mp4" in summary.failed["hang"] and "Timeout" in summary.failed["hang"]


def test_cli_extract_and_inspect(tmp_path, videos):
    manifest, _ = videos
    store = tmp_path / "cli.zarr"
    runner = CliRunner()
    args = [
        "extract",
        "--manifest",
        str(manifest),
        "--store",
        str(store),
        "--clip-model",
        "vqa-tiny-clip",
        "--random-weights",
        "--fps",
        "1",
        "--max-frames",
        "2",
        "--grid",
        "2x2",
        "--no-progress",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 extracted" in result.output and "2 failed" in result.output
    assert "RANDOM WEIGHTS" in result.output
    strict = runner.invoke(main, args + ["--strict"])
    assert strict.exit_code == 1 and "0 extracted, 5 already done" in strict.output
    assert "2 videos failed in earlier runs" in strict.output

    shown = runner.invoke(main, ["inspect", str(store)])
    assert shown.exit_code == 0, shown.output
    assert "done 3, failed 2, pending 0" in shown.output
    assert "window_embeddings: (rows,) + (4, 64) float16" in shown.output
    assert "RANDOM WEIGHTS" in shown.output and "failed corrupt:" in shown.output


def test_cli_fails_when_nothing_succeeds_and_explains_weights(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    manifest = write_manifest([ManifestRow("bad", bad, 1.0, "1-5")], tmp_path / "m.csv")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "extract",
            "--manifest",
            str(manifest),
            "--store",
            str(tmp_path / "s.zarr"),
            "--clip-model",
            "vqa-tiny-clip",
            "--random-weights",
            "--no-progress",
        ],
    )
    assert result.exit_code == 1 and "failed bad:" in result.output
    result = runner.invoke(
        main,
        [
            "extract",
            "--manifest",
            str(manifest),
            "--store",
            str(tmp_path / "t.zarr"),
            "--clip-model",
            "ViT-B-32",
        ],
    )
    assert result.exit_code != 0 and "--random-weights" in result.output
    result = runner.invoke(main, ["extract", "--dataset", "nosuch"])
    assert result.exit_code != 0 and "vqa-pipe manifest build nosuch" in result.output


def test_demo_command_builds_and_extracts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["demo", "--scenes", "1", "--no-progress"]
    refused = runner.invoke(main, args)
    assert refused.exit_code != 0 and "--random-weights" in refused.output
    assert not (tmp_path / "demo" / "demo" / "data").exists()  # failed before rendering
    result = runner.invoke(main, [*args, "--random-weights"])
    assert result.exit_code == 0, result.output
    assert "16 extracted" in result.output and "RANDOM WEIGHTS" in result.output
    # the layout's paths: clips, manifest and store where train --dataset demo looks
    assert (tmp_path / "manifests" / "demo.csv").is_file()
    store = FeatureStore.open(tmp_path / "features" / "demo.zarr")
    assert len(store.done_ids("semantic")) == 16 and store.random_weights
    again = runner.invoke(main, [*args, "--random-weights"])
    assert again.exit_code == 0 and "16 already done" in again.output


def test_dask_workers_write_the_same_store(tmp_path, videos, branches):
    """Parts spread over two local dask worker processes give the serial run's features."""
    from vqa_pipe.stages.extract import ExtractOptions, extract

    manifest, ids = videos
    serial = run_extract(manifest, tmp_path / "serial.zarr", branches, part_size=1, progress=False)
    options = ExtractOptions(workers=2, part_size=1, progress=False, random_weights=True,
                             device="cpu")
    branch_options = {k: v for k, v in TINY.items() if k != "random_weights"}
    parallel = extract(manifest, tmp_path / "dask.zarr", options, branch_options)
    assert sorted(parallel.done) == sorted(serial.done)
    assert parallel.failed.keys() == serial.failed.keys()
    a = FeatureStore.open(tmp_path / "serial.zarr").read("semantic", "frame_scores")
    b = FeatureStore.open(tmp_path / "dask.zarr").read("semantic", "frame_scores")
    assert a.keys() == b.keys()
    for vid in a:
        np.testing.assert_allclose(a[vid], b[vid], atol=2e-3)
    rerun = extract(manifest, tmp_path / "dask.zarr", options, branch_options)
    assert rerun.done == [] and rerun.skipped == len(ids)


def test_rescore_with_new_prompts_without_decoding(tmp_path, videos, branches):
    manifest, ids = videos
    source = tmp_path / "s.zarr"
    run_extract(manifest, source, branches, part_size=2, progress=False)
    prompts = tmp_path / "p.json"
    prompts.write_text(
        '{"name": "two", "sets": {"q": {"template": "a {} video.", "pairs": [["good", "bad"]]}}}'
    )
    runner = CliRunner()
    out = tmp_path / "re.zarr"
    result = runner.invoke(
        main,
        [
            "rescore",
            str(source),
            "--out",
            str(out),
            "--prompts",
            str(prompts),
            "--softmax",
            "pairs",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.output and "re-scored 3 videos" in result.output
    new = FeatureStore.open(out)
    scores = new.read("semantic", "frame_scores")
    frames = FeatureStore.open(source).read("semantic", "frame_scores")
    assert set(scores) == set(frames) and new.status("semantic")["corrupt"].state == "failed"
    for vid in scores:
        assert scores[vid].shape == (frames[vid].shape[0], 4)
        np.testing.assert_allclose(scores[vid][:, 0] + scores[vid][:, 1], 1.0, atol=1e-5)
    assert new.branch_config("semantic")["prompts"]["texts"] == ["a good video.", "a bad video."]
    # the same prompts reproduce the source's features exactly
    same = runner.invoke(main, ["rescore", str(source), "--out", str(tmp_path / "same.zarr")])
    assert same.exit_code == 0, same.output
    again = FeatureStore.open(tmp_path / "same.zarr").read("semantic", "frame_scores")
    for vid in again:
        np.testing.assert_allclose(again[vid], frames[vid], atol=1e-5)
    # a checkpoint that is not the source's is refused
    wrong = runner.invoke(
        main,
        ["rescore", str(source), "--out", str(tmp_path / "w.zarr"), "--clip-pretrained", "openai"],
    )
    assert wrong.exit_code != 0 and "random weights" in wrong.output


def test_on_config_change_replace_starts_over(tmp_path, videos, branches):
    manifest, _ = videos
    store = tmp_path / "s.zarr"
    run_extract(manifest, store, branches, part_size=2, progress=False)
    other = build_branches(["semantic"], **{**TINY, "max_frames": 2})
    summary = run_extract(
        manifest, store, other, part_size=2, progress=False, on_config_change="replace"
    )
    assert len(summary.done) == 3 and summary.skipped == 0
    assert FeatureStore.open(store).branch_config("semantic")["sampling"]["max_frames"] == 2
    # a folder that is not a vqa-pipe store is never deleted
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(StoreError, match="not a vqa-pipe feature store"):
        run_extract(manifest, foreign, other, progress=False, on_config_change="replace")
    assert (foreign / "zarr.json").is_file()


def test_both_branches_in_one_decoding_pass(tmp_path, tiny_video):
    manifest = write_manifest([ManifestRow("tiny", tiny_video, None, None)], tmp_path / "m.csv")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "extract",
            "--manifest",
            str(manifest),
            "--store",
            str(tmp_path / "s.zarr"),
            "--branches",
            "semantic,spatial",
            "--clip-model",
            "vqa-tiny-clip",
            "--random-weights",
            "--max-frames",
            "2",
            "--spatial-clips",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert set(store.branches()) == {"semantic", "spatial"}
    assert store.read("spatial", "clip_pooled")["tiny"].shape == (1, 768)
    assert store.read("spatial", "clip_maps")["tiny"].shape == (1, 768, 16, 7, 7)
    assert store.read("semantic", "frame_scores")["tiny"].shape[0] == 2
    assert store.branch_config("spatial")["random_weights"] is True


def test_a_second_writer_is_refused_naming_the_first(tmp_path, videos, branches):
    from vqa_pipe.pipeline.store_lock import StoreBusyError, writer_lock

    manifest, _ = videos
    store = tmp_path / "s.zarr"
    with writer_lock(store):  # another extraction is writing this store
        with pytest.raises(StoreBusyError, match=rf"pid {os.getpid()} on .*--store"):
            run_extract(manifest, store, branches, part_size=2, progress=False)
    assert not store.exists()  # nothing was started
    summary = run_extract(manifest, store, branches, part_size=2, progress=False)
    assert len(summary.done) == 3  # the lock is free once the holder is done


def test_limit_on_a_store_that_lists_more_videos(tmp_path, videos, branches):
    manifest, ids = videos
    store = tmp_path / "s.zarr"
    first = run_extract(manifest, store, branches, part_size=2, limit=1, progress=False)
    assert first.done == ids[:1] and FeatureStore.open(store).video_ids == ids[:1]
    run_extract(manifest, store, branches, part_size=2, progress=False)  # the rest
    logs = []
    again = run_extract(manifest, store, branches, part_size=2, limit=3, progress=False,
                        log=logs.append)
    assert FeatureStore.open(store).video_ids == ids  # the store keeps its list
    assert again.done == [] and again.skipped == 4 and again.total == 4  # parts 0-1: 4 videos
    assert any("--limit 3" in m and "first 2 part(s)" in m for m in logs)


def test_redo_extracts_named_videos_again_and_keeps_the_rest(tmp_path, videos, branches):
    manifest, ids = videos
    store_path = tmp_path / "s.zarr"
    run_extract(manifest, store_path, branches, part_size=2, progress=False)
    before = FeatureStore.open(store_path).read("semantic", "frame_scores")
    summary = run_extract(manifest, store_path, branches, part_size=2, redo=[ids[0]],
                          progress=False)
    assert summary.done == [ids[0]] and summary.failed == {}
    store = FeatureStore.open(store_path)
    after = store.read("semantic", "frame_scores")
    assert after.keys() == before.keys()
    for vid in after:
        np.testing.assert_array_equal(after[vid], before[vid])
    assert store.status("semantic")["corrupt"].state == "failed"  # not retried: not asked
    with pytest.raises(StoreError, match="not in .*nosuch"):
        run_extract(manifest, store_path, branches, part_size=2, redo=["nosuch"], progress=False)


def test_decoder_pool_writes_the_serial_store_and_isolates_bad_videos(
    tmp_path, videos, branches, sample_videos
):
    """Two decoder processes: the same arrays as one; a hanging, a corrupt and a missing video
    each fail alone, with their reasons."""
    from vqa_pipe.stages.extract import SerialRunner

    manifest, ids = videos
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # open() blocks forever: the decoder holding it must be killed
    from vqa_pipe.pipeline.manifest import read_manifest

    rows = [*read_manifest(manifest), ManifestRow("hang", fifo, 3.0, "1-5")]
    manifest = write_manifest(rows, tmp_path / "m2.csv")
    one = run_extract(manifest, tmp_path / "one.zarr", branches, part_size=2, progress=False,
                      runner=SerialRunner(branches, timeout=3, decoders=1))
    two = run_extract(manifest, tmp_path / "two.zarr", branches, part_size=2, progress=False,
                      runner=SerialRunner(branches, timeout=3, decoders=2))
    assert sorted(two.done) == sorted(one.done) == sorted(ids[:3])
    assert set(two.failed) == {"corrupt", "missing", "hang"}
    assert "DecodeTimeout" in two.failed["hang"] and "missing.mp4" in two.failed["missing"]
    a = FeatureStore.open(tmp_path / "one.zarr")
    b = FeatureStore.open(tmp_path / "two.zarr")
    for array in ("frame_scores", "window_embeddings", "frame_times"):
        left, right = a.read("semantic", array), b.read("semantic", array)
        assert left.keys() == right.keys()
        for vid in left:
            np.testing.assert_array_equal(left[vid], right[vid])


def test_a_video_changed_under_the_same_id_is_extracted_again(tmp_path, sample_videos, branches):
    folder = tmp_path / "v"
    folder.mkdir()
    names = REAL[:2]
    rows = []
    for name in names:
        shutil.copy(sample_videos[name]["path"], folder / name)
        rows.append(ManifestRow(folder.joinpath(name).stem, folder / name, 3.0, "1-5"))
    manifest = write_manifest(rows, tmp_path / "m.csv")
    store = tmp_path / "s.zarr"
    run_extract(manifest, store, branches, part_size=2, progress=False)
    before = FeatureStore.open(store).read("semantic", "frame_scores")
    # the first file is touched (same bytes, new time), the second replaced by another video
    os.utime(folder / names[0], ns=(10**18, 10**18))
    shutil.copy(sample_videos[REAL[2]]["path"], folder / names[1])
    logs: list[str] = []
    again = run_extract(manifest, store, branches, part_size=2, progress=False,
                        log=logs.append)
    ids = [r.video_id for r in rows]
    assert again.changed == [ids[1]] and again.done == [ids[1]]
    assert any("1 videos changed on disk" in m for m in logs)
    after = FeatureStore.open(store).read("semantic", "frame_scores")
    np.testing.assert_array_equal(after[ids[0]], before[ids[0]])  # kept
    assert after[ids[1]].shape != before[ids[1]].shape or not np.array_equal(
        after[ids[1]], before[ids[1]])  # the new content's features
    third = run_extract(manifest, store, branches, part_size=2, progress=False)
    assert third.changed == [] and third.done == []  # recorded again: nothing to redo


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_refused_configuration_leaves_the_store_as_it_was(tmp_path, videos, branches):
    """Every branch is checked before anything is written: a new branch asked for beside a
    mismatching one is not added either."""
    manifest, _ = videos
    store = tmp_path / "s.zarr"
    run_extract(manifest, store, branches, part_size=2, progress=False)
    before = _snapshot(store)
    other = build_branches(["spatial", "semantic"], **{**TINY, "max_frames": 2},
                           spatial_clips=1)
    with pytest.raises(StoreError, match="sampling.max_frames: 4 -> 2"):
        run_extract(manifest, store, other, part_size=2, progress=False)
    assert _snapshot(store) == before
    assert FeatureStore.open(store).branches() == ["semantic"]


def test_replace_removes_only_the_branch_that_changed(tmp_path, videos, branches):
    """--on-config-change replace extracts the changed branch again; an imported feature set
    in the same store stays as it was."""
    from vqa_pipe.pipeline.feature_import import import_features

    manifest, ids = videos
    store = tmp_path / "s.zarr"
    run_extract(manifest, store, branches, part_size=2, progress=False)
    matrix = np.arange(len(ids) * 3, dtype=np.float64).reshape(len(ids), 3)
    np.save(tmp_path / "extra.npy", matrix)
    import_features(tmp_path / "extra.npy", manifest, store, name="extra")
    extra_before = FeatureStore.open(store).read("extra", "features")
    logs: list[str] = []
    other = build_branches(["semantic"], **{**TINY, "max_frames": 2})
    run_extract(manifest, store, other, part_size=2, progress=False,
                on_config_change="replace", log=logs.append)
    assert any(m.startswith("replacing 'semantic' in") for m in logs)
    reopened = FeatureStore.open(store)
    assert sorted(reopened.branches()) == ["extra", "semantic"]
    assert reopened.branch_config("semantic")["sampling"]["max_frames"] == 2
    assert all(len(v) <= 2 for v in reopened.read("semantic", "frame_times").values())
    extra_after = reopened.read("extra", "features")
    assert extra_after.keys() == extra_before.keys() == set(ids)
    for vid in ids:
        np.testing.assert_array_equal(extra_after[vid], extra_before[vid])


def test_decoders_never_run_more_than_their_window_of_parts_ahead():
    """The shared video queue holds a decoder back while the oldest unwritten part is more
    than ``window`` parts behind, and lets it go as soon as that part is written."""
    import threading

    from vqa_pipe.pipeline.extraction import _GatedVideos

    items = [(f"v{i}", f"p{i}") for i in range(8)]
    parts = [0, 0, 1, 1, 2, 2, 3, 3]
    stop = threading.Event()
    gate = _GatedVideos(items, parts, window=1, stop=stop)
    assert [next(gate)[0] for _ in range(4)] == ["v0", "v1", "v2", "v3"]  # parts 0 and 1
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(next(gate)), daemon=True)
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and got == []  # part 2 must wait for part 0
    gate.written(0)
    waiter.join(timeout=5.0)
    assert got == [("v4", "p4")]
    stop.set()  # a stopped run hands out nothing more
    assert list(gate) == []


def test_a_crash_while_a_changed_part_is_rewritten_redoes_it(tmp_path, sample_videos, branches,
                                                             monkeypatch):
    """The new fingerprints are recorded only after the part's arrays: a crash in between
    leaves the redone videos marked pending, and the next run extracts them again (never old
    arrays under a new fingerprint)."""
    folder = tmp_path / "v"
    folder.mkdir()
    rows = []
    for name in REAL[:2]:
        shutil.copy(sample_videos[name]["path"], folder / name)
        rows.append(ManifestRow(folder.joinpath(name).stem, folder / name, 3.0, "1-5"))
    manifest = write_manifest(rows, tmp_path / "m.csv")
    store = tmp_path / "s.zarr"
    run_extract(manifest, store, branches, part_size=2, progress=False)
    shutil.copy(sample_videos[REAL[2]]["path"], folder / REAL[1])  # new content, same id
    changed = rows[1].video_id

    def crash(self, *args, **kwargs):
        raise RuntimeError("power cut (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(FeatureStore, "write_part", crash)
        with pytest.raises(RuntimeError, match="power cut"):
            run_extract(manifest, store, branches, part_size=2, progress=False)
    again = run_extract(manifest, store, branches, part_size=2, progress=False)
    assert again.changed == [changed] and again.done == [changed]
    fresh = run_extract(write_manifest([ManifestRow(changed, folder / REAL[1], 3.0, "1-5")],
                                       tmp_path / "one.csv"),
                        tmp_path / "one.zarr", branches, part_size=1, progress=False)
    assert fresh.done == [changed]
    np.testing.assert_array_equal(
        FeatureStore.open(store).read("semantic", "frame_scores")[changed],
        FeatureStore.open(tmp_path / "one.zarr").read("semantic", "frame_scores")[changed])
    assert run_extract(manifest, store, branches, part_size=2, progress=False).changed == []


_OPENMP_PROBE = """
import os
from click.testing import CliRunner
from vqa_pipe.cli import main
result = CliRunner().invoke(main, ["regressors"])
assert result.exit_code == 0, result.output
print(os.environ.get("OMP_WAIT_POLICY"))
import torch
from vqa_pipe.pipeline.device import idle_openmp_threads_sleep
print(idle_openmp_threads_sleep())  # torch is loaded: too late, nothing changes
"""


@pytest.mark.parametrize("user_policy", [None, "ACTIVE"])
def test_the_cli_makes_idle_openmp_threads_sleep_unless_the_user_chose(user_policy):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    out = subprocess.run([sys.executable, "-c", _OPENMP_PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [user_policy or "PASSIVE", "False"]
