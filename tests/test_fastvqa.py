"""FAST-VQA fidelity: clip sampling, fragments, backbone, head and the ``fastvqa`` regressor
against the upstream outputs in ``tests/fixtures/fastvqa/`` (see its README for how they were
made). The same seeded weights and inputs are rebuilt here from ``seeded.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fixture_module
from vqa_pipe.pipeline.feature_table import SPATIAL_CLIP_MAPS, FeatureTable, TableSpec, load_table
from vqa_pipe.pipeline.fragments import ClipPlan, clip_offset_rng, fragment_layout
from vqa_pipe.pipeline.regressors import RegressorError, create_regressor, load_regressor
from vqa_pipe.pipeline.swin_backbone import build_backbone
from vqa_pipe.pipeline.vqa_head import (
    VQAHead,
    build_head,
    head_from_state,
    load_vqa_head,
    read_head_checkpoint,
)
from vqa_pipe.pipeline.weights import WeightsError

FIXTURES = Path(__file__).parent / "fixtures" / "fastvqa"
seeded = fixture_module(FIXTURES / "seeded.py", "fastvqa_seeded")

META = json.loads((FIXTURES / "fastvqa.json").read_text())
OUT = dict(np.load(FIXTURES / "outputs.npz"))
FRAGMENTS = dict(np.load(FIXTURES / "fragments.npz"))
KEYS = {k: tuple(v) for k, v in META["backbone"]["keys"].items()}
HEAD_KEYS = {k: tuple(v) for k, v in META["head"]["head_keys"].items()}
TOL = 1e-5  # float32, different operation order


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def fastvqa_state() -> dict[str, torch.Tensor]:
    """The seeded FAST-VQA-format checkpoint of the fixtures (backbone + head)."""
    state = {"fragments_backbone." + k: v
             for k, v in seeded.seeded_tensors(KEYS, seeded.BACKBONE_SEED).items()}
    state.update({"vqa_head." + k: v
                  for k, v in seeded.seeded_tensors(HEAD_KEYS, seeded.HEAD_SEED).items()})
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """That checkpoint as FAST-VQA ships it: ``{"state_dict": ...}`` saved with torch.save."""
    path = tmp_path_factory.mktemp("fastvqa") / "FAST_VQA_B_seeded.pth"
    torch.save({"state_dict": fastvqa_state()}, path)
    return path


@pytest.fixture(scope="module")
def backbone():
    model = build_backbone("swin3d_t_grpb")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == KEYS  # same parameter names and shapes as upstream's swin_tiny_grpb
    model.load_state_dict(seeded.seeded_tensors(KEYS, seeded.BACKBONE_SEED), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def clip_features(backbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone(seeded.seeded_clip())


# ------------------------------------------------------------------ clip sampling


@pytest.mark.parametrize("n", sorted(int(n) for n in META["clips"]["cases"]))
def test_clip_indices_are_fragment_sample_frames(n):
    upstream = np.array(META["clips"]["cases"][str(n)])
    ours = ClipPlan().clip_indices(n)  # the defaults are FAST-VQA-B's test sampling
    assert ours.shape == upstream.shape == (4, 32)
    segment = n // 4
    if segment > 64:  # both sides draw an offset per clip: same grid, offsets in range
        up_off = upstream[:, 0] - segment * np.arange(4)
        our_off = ours[:, 0] - segment * np.arange(4)
        for off in (up_off, our_off):
            assert ((off >= 0) & (off < segment - 64)).all()
        np.testing.assert_array_equal((upstream - up_off[:, None]) % n,
                                      (ours - our_off[:, None]) % n)
    else:
        np.testing.assert_array_equal(ours, upstream)


@pytest.mark.parametrize("n", [300, 1000])
def test_clip_offsets_span_upstreams_range(n):
    low, high = META["clips"]["offset_ranges"][str(n)]
    segment = n // 4
    ours = np.concatenate([ClipPlan(seed=s).clip_starts(n) - segment * np.arange(4)
                           for s in range(2000)])
    assert [ours.min(), ours.max()] == [low, high] == [0, segment - 64 - 1]
    # the documented mapping from the seed to the offsets
    np.testing.assert_array_equal(ClipPlan(seed=7).clip_starts(n) - segment * np.arange(4),
                                  clip_offset_rng(7, n).integers(0, segment - 64, size=4))


# ------------------------------------------------------------------ fragments


@pytest.mark.parametrize("name", list(META["fragments"]["resolutions"]))
def test_fragments_with_zero_offsets_match_upstream(name):
    entry = META["fragments"]["resolutions"][name]
    h, w = entry["height"], entry["width"]
    frame = seeded.coordinate_frame(h, w)
    layout = fragment_layout(h, w)  # no rng: zero offsets, as the fixture forced upstream
    frag = layout.extract(frame)
    assert layout.upscaled == entry["upsampled"]
    if entry["upsampled"]:
        np.testing.assert_array_equal(frag, FRAGMENTS[f"{name}_fragment"])
    else:
        np.testing.assert_array_equal(layout.tops, entry["tops"])
        np.testing.assert_array_equal(layout.lefts, entry["lefts"])
        rows, cols = seeded.decode_coordinates(frag)
        assert rows[::32, ::32].tolist() == entry["tops"]
        assert cols[::32, ::32].tolist() == entry["lefts"]
    assert _sha(frag) == entry["sha256"]


@pytest.mark.parametrize("clip", [0, 1])
def test_upstream_offset_draws_give_upstream_positions(clip):
    entry = META["fragments"]["random_offsets_1080p"][clip]
    offsets = (np.array(entry["offsets_rows"]), np.array(entry["offsets_cols"]))
    layout = fragment_layout(1080, 1920, offsets=offsets)
    np.testing.assert_array_equal(layout.tops, entry["tops"])
    np.testing.assert_array_equal(layout.lefts, entry["lefts"])
    # upstream drew them in [0, cell - 32): so does the seeded generator
    assert offsets[0].max() < 1080 // 7 - 32 and offsets[1].max() < 1920 // 7 - 32
    ours = fragment_layout(1080, 1920, rng=np.random.default_rng(clip))
    assert (ours.tops - layout.tops + offsets[0]).max() < 1080 // 7 - 32


# ------------------------------------------------------------------ backbone and head


def test_backbone_matches_upstream_swin_tiny_grpb(clip_features):
    ref = {k[len("backbone_"):]: v for k, v in OUT.items() if k.startswith("backbone_")}
    ours = seeded.map_summary(clip_features)
    assert list(ours["shape"]) == list(ref["shape"]) == [1, 768, 16, 7, 7]
    for key in ("channel_mean", "position_mean", "picked"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=TOL, err_msg=key)
    np.testing.assert_allclose(ours["sum_abs"], ref["sum_abs"], rtol=1e-6)
    # not a vacuous match: the fragment bias tables change the result
    assert np.abs(ref["picked"]).max() > 0.5


def test_vqa_head_on_backbone_features_matches_upstream(clip_features, checkpoint):
    head, info = load_vqa_head(checkpoint)
    assert info.format == "fastvqa" and (info.in_channels, info.hidden_channels) == (768, 64)
    assert info.identity["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    with torch.no_grad():
        score_map = head(clip_features)
        score = head.score_clips(clip_features[:, None])
    np.testing.assert_allclose(score_map.numpy().reshape(-1), OUT["head_clip_score_map"],
                               rtol=0, atol=TOL)
    assert float(score) == pytest.approx(float(OUT["head_clip_score"][0]), abs=TOL)


def test_head_dropout_is_upstreams_and_inactive_in_eval():
    head = VQAHead()
    assert head.dropout.p == 0.5 and head.training  # upstream's dropout_ratio, trainable
    x = torch.randn(1, 768, 2, 2, 2)
    head.eval()
    with torch.no_grad():
        assert torch.equal(head(x), head(x))
        expected = head.fc_last(torch.nn.functional.gelu(head.fc_hid(x)))
        torch.testing.assert_close(head(x), expected)


# ------------------------------------------------------------------ end to end


def _synthetic_frames():
    from vqa_pipe.pipeline.decode import Frame, VideoInfo

    frames = seeded.synthetic_video()
    info = VideoInfo(seeded.E2E_WIDTH, seeded.E2E_HEIGHT, 25.0, len(frames), len(frames) / 25)
    return info, [Frame(i, i / 25, f) for i, f in enumerate(frames)]


@pytest.fixture(scope="module")
def e2e(checkpoint):
    """The synthetic video through our spatial branch with the seeded FAST-VQA checkpoint;
    the backbone's float32 output is recorded on the way (the branch stores float16)."""
    from vqa_pipe.pipeline.spatial_branch import SpatialBranch

    branch = SpatialBranch("auto", weights=checkpoint, clip_len=seeded.E2E_CLIP_LEN,
                           frame_interval=seeded.E2E_INTERVAL, n_clips=seeded.E2E_CLIPS)
    info, frames = _synthetic_frames()
    model, recorded = branch.model, []

    def record(x):
        out = model(x)
        recorded.append(out.float().clone())
        return out

    branch.model = record
    try:
        state = branch.start_video("synthetic", info)
        for frame in frames:
            branch.add_frame(state, frame)
        fragments = branch.fragments(state).copy()
        arrays = branch.finish_video(state)
    finally:
        branch.model = model
    return branch, info, fragments, arrays, torch.cat(recorded)


def test_end_to_end_sampling_matches_fusion_dataset(e2e):
    branch, info, fragments, _, _ = e2e
    assert branch.backbone_name == "swin3d_t_grpb"
    np.testing.assert_array_equal(branch.plan().clip_indices(info.n_frames).ravel(),
                                  OUT["e2e_frame_inds"])
    clips = fragments[0].reshape(-1, 224, 224, 3)  # (clips * frames) in upstream's order
    np.testing.assert_array_equal(clips[:, :8, :8], OUT["e2e_fragment_corner"])
    assert _sha(clips) == META["head"]["e2e"]["fragments_sha256"]


def test_end_to_end_score_in_float32_matches_upstream(e2e, checkpoint):
    _, _, _, arrays, maps = e2e  # the backbone's float32 maps of the two clips, in clip order
    head, _ = load_vqa_head(checkpoint)
    with torch.no_grad():
        clip_scores = head(maps).mean(dim=(1, 2, 3, 4))
    np.testing.assert_allclose(clip_scores.numpy(), OUT["e2e_clip_scores"], rtol=0, atol=TOL)
    assert float(clip_scores.mean()) == pytest.approx(float(OUT["e2e_score"][0]), abs=TOL)
    np.testing.assert_array_equal(arrays["clip_maps"], maps.numpy().astype(np.float16))


def _store_with(tmp_path, arrays_by_id: dict, config: dict, mos: dict[str, float]):
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
    from vqa_pipe.pipeline.store import FeatureStore

    ids = list(arrays_by_id)
    rows = []
    for vid in ids:
        video = tmp_path / f"{vid}.mp4"
        video.write_bytes(b"")
        rows.append(ManifestRow(vid, video, mos[vid], "1-5"))
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    store = FeatureStore.create_or_open(tmp_path / "store.zarr", ids, part_size=2)
    store.ensure_branch("spatial", config)
    for part in range(store.n_parts):
        store.write_part("spatial", part, {v: arrays_by_id[v] for v in store.part_ids(part)})
    return tmp_path / "store.zarr", manifest


def test_fastvqa_regressor_reproduces_fastvqa_through_the_store(e2e, checkpoint, tmp_path):
    branch, _, _, arrays, _ = e2e
    assert arrays["clip_maps"].shape == (2, 768, 8, 7, 7)
    assert arrays["clip_maps"].dtype == np.float16
    # two more "videos": the same maps scaled, so the scores differ
    other = {k: (v * 0.9).astype(v.dtype) for k, v in arrays.items()}
    third = {k: (v * 1.1).astype(v.dtype) for k, v in arrays.items()}
    store, manifest = _store_with(tmp_path, {"a": arrays, "b": other, "c": third},
                                  branch.config(), {"a": 3.0, "b": 2.0, "c": 4.0})
    table = load_table(store, manifest, [SPATIAL_CLIP_MAPS], TableSpec())
    maps = table.inputs[SPATIAL_CLIP_MAPS]
    assert maps.dtype == np.float16 and maps.shape == (3, 2, 768, 8, 7, 7)
    np.testing.assert_array_equal(maps[table.video_ids.index("a")], arrays["clip_maps"])
    model = create_regressor("fastvqa", checkpoint=str(checkpoint))
    info = model.fit(table)
    assert info["trained"].startswith("nothing") and info["calibration"] == [1.0, 0.0]
    assert info["head"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    check = info["store_check"]
    assert check["backbone_matches_checkpoint"] is True
    assert "n_clips=2 (FAST-VQA-B: 4)" in check["protocol_departures"]
    raw = model.predict_unit(table)
    # float16 maps: the score moves by float16 rounding only (measured: 1.8e-7 here)
    ref = float(OUT["e2e_score"][0])
    assert raw[table.video_ids.index("a")] == pytest.approx(ref, abs=TOL)
    # predictions on the 1-5 scale are a fixed linear map of FAST-VQA's scores
    np.testing.assert_allclose(model.predict(table), 1 + 4 * raw)
    loaded = load_regressor(model.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.predict_unit(table), raw)


def test_fastvqa_regressor_refuses_features_of_another_backbone(e2e, checkpoint, tmp_path):
    branch, _, _, arrays, _ = e2e
    config = dict(branch.config())
    config["weights"] = dict(config["weights"], file="swin3d_t-7615ae03.pth", sha256="0" * 64)
    store, manifest = _store_with(tmp_path, {"a": arrays, "b": arrays}, config,
                                  {"a": 3.0, "b": 2.0})
    table = load_table(store, manifest, [SPATIAL_CLIP_MAPS])
    with pytest.raises(RegressorError, match="swin3d_t-7615ae03.pth.*--swin-weights") as err:
        create_regressor("fastvqa", checkpoint=str(checkpoint)).fit(table)
    assert str(store) in str(err.value) and "check_backbone=false" in str(err.value)
    model = create_regressor("fastvqa", checkpoint=str(checkpoint), check_backbone=False)
    assert model.fit(table)["store_check"]["backbone_matches_checkpoint"] is False


# ------------------------------------------------------------------ head checkpoints


def _small_head_state(prefix: str, channels: int = 8, hidden: int = 4, seed: int = 0):
    shapes = {"fc_hid.weight": (hidden, channels, 1, 1, 1), "fc_hid.bias": (hidden,),
              "fc_last.weight": (1, hidden, 1, 1, 1), "fc_last.bias": (1,)}
    return {prefix + k: v * 50 for k, v in seeded.seeded_tensors(shapes, seed).items()}


def test_dover_technical_head_and_bare_heads_load(tmp_path):
    from safetensors.torch import save_file

    dover = _small_head_state("technical_head.")
    dover.update(_small_head_state("aesthetic_head.", seed=1))
    dover["technical_backbone.norm.weight"] = torch.ones(8)
    path = tmp_path / "DOVER.safetensors"
    save_file(dover, str(path))
    head = read_head_checkpoint(path)
    assert head.format == "dover" and head.prefix == "technical_head."
    torch.testing.assert_close(head.state["fc_hid.weight"], dover["technical_head.fc_hid.weight"])
    bare = head_from_state(_small_head_state(""))
    assert bare.format == "bare" and (bare.in_channels, bare.hidden_channels) == (8, 4)
    built = build_head(bare)
    torch.testing.assert_close(built.fc_last.bias, bare.state["fc_last.bias"])


@pytest.mark.parametrize("state, message", [
    ({"fragments_backbone.norm.weight": torch.ones(3)}, "holds no FAST-VQA quality head"),
    ({**_small_head_state("vqa_head."), "vqa_head.fc_last.weight": torch.zeros(2, 4, 1, 1, 1)},
     "not those of a VQAHead"),
])
def test_bad_head_checkpoints_name_the_file(tmp_path, state, message):
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=message) as err:
        read_head_checkpoint(path)
    assert str(path) in str(err.value)


class _Payload:
    """Anything a plain state dict would not hold: unpickling it needs to run code."""


def test_head_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"vqa_head.fc_hid.weight": _Payload()}}, path)
    with pytest.raises(WeightsError, match="cannot read"):
        read_head_checkpoint(path)


# ------------------------------------------------------------------ the regressor, small maps


def _small_table(n=12, seed=0) -> FeatureTable:
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(n, 3, 8, 2, 3, 3)).astype(np.float16)
    mos = 1 + 4 * rng.random(n)
    return FeatureTable([f"v{i}" for i in range(n)], mos, "1-5", {SPATIAL_CLIP_MAPS: maps})


def test_regressor_scores_are_the_heads_mean_over_positions_then_clips(tmp_path):
    path = tmp_path / "head.pth"
    torch.save({"state_dict": _small_head_state("vqa_head.")}, path)
    table = _small_table()
    model = create_regressor("fastvqa", checkpoint=str(path))
    info = model.fit(table.take(range(8)))
    assert info["store_check"]["store"] is None  # an in-memory table: nothing to check
    head, _ = load_vqa_head(path)
    maps = torch.from_numpy(table.inputs[SPATIAL_CLIP_MAPS]).float()
    with torch.no_grad():
        per_clip = torch.stack([head(maps[:, k]).mean(dim=(1, 2, 3, 4)) for k in range(3)], 1)
    np.testing.assert_allclose(model.predict_unit(table), per_clip.mean(1).double().numpy(),
                               rtol=1e-6, atol=1e-7)
    assert np.ptp(per_clip.numpy()) > 0.1  # clips differ: the averaging is exercised


def test_linear_calibration_only_rescales(tmp_path):
    path = tmp_path / "head.pth"
    torch.save(_small_head_state("vqa_head."), path)
    table = _small_table(20, seed=1)
    raw = create_regressor("fastvqa", checkpoint=str(path))
    raw.fit(table)
    lin = create_regressor("fastvqa", checkpoint=str(path), calibrate="linear")
    info = lin.fit(table)
    slope, intercept = info["calibration"]
    assert slope != 1.0
    np.testing.assert_allclose(lin.predict_unit(table), slope * raw.predict_unit(table) + intercept)
    loaded = load_regressor(lin.save(tmp_path / "lin"))
    np.testing.assert_allclose(loaded.predict(table), lin.predict(table))


@pytest.mark.parametrize("params, message", [
    ({}, "needs the FAST-VQA checkpoint: --param checkpoint=FILE"),
    ({"checkpoint": "x.pth", "calibrate": "logistic"}, "calibrate. must be one of: none, linear"),
    ({"checkpoint": "x.pth", "lr": 0.1}, "has no parameter"),
])
def test_bad_regressor_parameters(params, message):
    with pytest.raises(RegressorError, match=message):
        create_regressor("fastvqa", **params)


def test_missing_checkpoint_and_wrong_channels(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        create_regressor("fastvqa", checkpoint=str(tmp_path / "none.pth")).fit(_small_table())
    path = tmp_path / "head.pth"
    torch.save(_small_head_state("vqa_head.", channels=16), path)
    with pytest.raises(RegressorError, match=r"do not fit the head \(expected \(clips, 16"):
        create_regressor("fastvqa", checkpoint=str(path)).fit(_small_table())


def test_protocol_departures_are_logged(e2e, checkpoint, tmp_path, caplog):
    branch, _, _, arrays, _ = e2e
    store, manifest = _store_with(tmp_path, {"a": arrays, "b": arrays}, branch.config(),
                                  {"a": 3.0, "b": 2.0})
    table = load_table(store, manifest, [SPATIAL_CLIP_MAPS])
    with caplog.at_level(logging.WARNING):
        create_regressor("fastvqa", checkpoint=str(checkpoint)).fit(table)
    assert "clip_len=16 (FAST-VQA-B: 32)" in caplog.text


# ------------------------------------------------------------------ through the stages


def test_train_and_evaluate_stages_run_fastvqa(tmp_path):
    """``train --regressor fastvqa --protocol cross --test all ...`` scores every video with
    FAST-VQA's head; ``evaluate`` does the same on another store."""
    from scipy import stats
    from vqa_pipe.pipeline.spatial_branch import SpatialBranch
    from vqa_pipe.pipeline.swin_backbone import SwinConfig, register_backbone
    from vqa_pipe.stages.evaluate import run_evaluate
    from vqa_pipe.stages.train import DatasetRef, TrainOptions, run_train

    micro = register_backbone("test-swin-micro-fastvqa", SwinConfig(
        embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
        frag_bias=(True, True, True, False), adaptive_window=True), exist_ok=True)
    model = build_backbone(micro).init_random(3)
    state = {"fragments_backbone." + k: v for k, v in model.state_dict().items()}
    state.update(_small_head_state("vqa_head.", channels=micro.out_channels, hidden=4))
    ckpt = tmp_path / "FAST_VQA_micro.pth"
    torch.save({"state_dict": state}, ckpt)
    config = SpatialBranch("test-swin-micro-fastvqa", weights=ckpt).config()
    rng = np.random.default_rng(0)
    maps = {f"v{i:02d}": {"clip_maps": rng.normal(size=(4, 64, 16, 7, 7)).astype(np.float16),
                          "clip_pooled": np.zeros((4, 64), np.float32)} for i in range(12)}
    mos = {v: float(1 + 4 * rng.random()) for v in maps}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store, manifest = _store_with(tmp_path / "a", maps, config, mos)
    other = dict(list(maps.items())[:6])
    store_b, manifest_b = _store_with(tmp_path / "b", other, config, mos)
    opts = TrainOptions(regressor="fastvqa", params={"checkpoint": str(ckpt)},
                        protocol="cross", splits=1)
    result = run_train(DatasetRef(store, manifest, "konvid"), tmp_path / "run", opts,
                       tests=[DatasetRef(store, manifest, "konvid_all")])
    rows = [r for r in result.predictions if r.test_set == "konvid_all"]
    assert len(rows) == 12
    head, _ = load_vqa_head(ckpt)
    with torch.no_grad():
        expected = {v: float(head.score_clips(torch.from_numpy(m["clip_maps"][None]).float()))
                    for v, m in maps.items()}
    for row in rows:  # 1-5 scale: 1 + 4 * FAST-VQA's score
        assert row.prediction == pytest.approx(1 + 4 * expected[row.video_id], abs=1e-5)
    srocc = stats.spearmanr([r.mos for r in rows], [expected[r.video_id] for r in rows])[0]
    assert result.summary["konvid_all"]["srocc"]["median"] == pytest.approx(srocc)
    (folder,) = (tmp_path / "run" / "models").iterdir()
    fit_info = json.loads((folder / "config.json").read_text())
    assert fit_info["fit_info"]["trained"].startswith("nothing")
    evaluated = run_evaluate(tmp_path / "run", store_b, manifest_b, tmp_path / "eval")
    assert len(evaluated.predictions) == 6

