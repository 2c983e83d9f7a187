"""CLIPVQA head: fidelity to upstream (fixtures), soft labels, loss, shapes, learning, decoders,
and the head through the feature table, ``train`` and ``evaluate``.

The fixtures in ``tests/fixtures/clipvqa`` were written by ``regenerate.py`` from upstream's
own code (GZHU-DVL/CLIPVQA) with the seeded weights and inputs of ``seeded.py``; these tests
rebuild the same weights and inputs and run this project's modules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST_CLIPVQA as FAST
from helpers import fixture_module, toy_table
from vqa_pipe.pipeline import clipvqa as cv
from vqa_pipe.pipeline.feature_table import (
    CLIP_FRAMES,
    CLIP_KEYS,
    LEVEL_TEXT,
    FeatureError,
    TableSpec,
    load_table,
    tsn_indices,
)
from vqa_pipe.pipeline.regressors import (
    WEIGHTS_FILE,
    RegressorError,
    create_regressor,
    load_regressor,
)

FIXTURES = Path(__file__).parent / "fixtures" / "clipvqa"
seeded = fixture_module(FIXTURES / "seeded.py", "clipvqa_seeded")
REF = dict(np.load(FIXTURES / "reference.npz"))
META = json.loads((FIXTURES / "reference.json").read_text())
RTOL, ATOL = 1e-5, 2e-6  # float32 rounding


def _checksum_ok(key: str, value) -> None:
    """The rebuilt inputs are the ones the fixture was made from (an array, or checksums)."""
    if isinstance(value, np.ndarray):
        value = seeded.checksum(value)
    np.testing.assert_allclose(value, META["checksums"][key], rtol=1e-9)


def _load_seeded(module: torch.nn.Module, listed: list, skip: set[str]) -> None:
    """Load the seeded upstream weights into ``module`` by name; every parameter of ours must
    get one, and only the upstream names in ``skip`` may have no counterpart here."""
    state = module.state_dict()
    names = {name for name, _ in listed}
    assert set(state) <= names, f"not covered by the fixture: {set(state) - names}"
    assert names - set(state) == skip
    with torch.no_grad():
        for name, shape in listed:
            if name in state:
                state[name].copy_(torch.from_numpy(seeded.param_value(name, tuple(shape))))
    module.eval()


# --------------------------------------------------------------------------- fidelity
def test_fixture_records_upstream_and_stays_small():
    assert META["upstream"].endswith("GZHU-DVL/CLIPVQA") and len(META["commit"]) == 40
    for name in ("reference.npz", "reference.json", "README.md", "regenerate.py", "seeded.py"):
        path = FIXTURES / name
        assert path.is_file() and path.stat().st_size < 200_000, name


def test_soft_labels_match_upstream_pro_lab():
    levels = seeded.label_levels()
    _checksum_ok("label_levels", levels)
    np.testing.assert_allclose(cv.soft_labels(levels), REF["soft_labels"], rtol=1e-12,
                               atol=1e-15)


def test_svr_decoder_matches_upstream_svr_block():
    mos = seeded.svr_train_mos()  # 0-100, as upstream's train.csv
    probes = seeded.svr_probe_probs()
    _checksum_ok("svr_train_mos", mos)
    _checksum_ok("svr_probe_probs", probes)
    decoder = cv.SVRDecoder.fit(cv.to_levels(mos, "0-100"))  # upstream: mos / 20
    assert decoder.gamma == pytest.approx(float(REF["svr_gamma"][0]), rel=1e-12)
    np.testing.assert_allclose(decoder.predict(probes), REF["svr_predictions"], rtol=1e-9,
                               atol=1e-9)


def test_loss_matches_upstream_criterion():
    inp = seeded.loss_inputs()
    _checksum_ok("loss_probs", inp["probs"])
    loss = cv.cosine_label_loss(torch.from_numpy(inp["probs"]),
                                torch.from_numpy(cv.soft_labels(inp["levels"])))
    assert float(loss) == pytest.approx(float(REF["loss"][0]), rel=1e-6)


def test_sat_matches_upstream_over_frames_and_departs_from_its_batch_attention():
    c = seeded.SAT
    sat = cv.SAT(c["T"], c["D"], c["layers"])
    _load_seeded(sat, META["params"]["sat"], skip={"alpha"})
    x = seeded.sat_inputs()
    _checksum_ok("sat_frames", x)
    with torch.no_grad():
        out = sat(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, REF["sat"], rtol=RTOL, atol=ATOL)
    # upstream as written attends across the videos of a batch: a real, documented difference
    assert np.abs(out - REF["sat_as_written"]).max() > 0.1
    # ours is per video: a video's output does not depend on the others in the batch
    with torch.no_grad():
        alone = sat(torch.from_numpy(x[:1])).numpy()
    np.testing.assert_allclose(alone, out[:1], rtol=RTOL, atol=ATOL)


def test_vat_matches_upstream_prompt_generator():
    c = seeded.VAT
    vat = cv.VAT(c["D"], c["layers"], alpha=0.1)
    _load_seeded(vat, META["params"]["vat"], skip=set())
    inp = seeded.vat_inputs()
    _checksum_ok("vat_inputs", np.concatenate([inp["text"].ravel(), inp["keys"].ravel()]))
    with torch.no_grad():
        out = vat(torch.from_numpy(inp["text"]), torch.from_numpy(inp["keys"])).numpy()
    np.testing.assert_allclose(out, REF["vat"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(seeded.HEADS))
def test_head_matches_upstream_forward_on_cached_features(name):
    c = seeded.HEADS[name]
    inp = seeded.head_inputs(name)
    _checksum_ok(f"head_{name}", [seeded.checksum(v) for v in inp.values()])
    args = [torch.from_numpy(inp[k]) for k in ("frames", "keys", "text")]
    head = cv.ClipvqaHead(c["T"], c["D"], c["C"])
    _load_seeded(head, META["params"][f"head_{name}"], skip={"mit.alpha"})
    with torch.no_grad():
        probs = head(*args).numpy()
    np.testing.assert_allclose(probs, REF[f"head_{name}"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert np.abs(probs - REF[f"head_{name}_as_written"]).max() > 0.01
    # the 'tokens' layout (one row per patch) is a different model, not a no-op
    other = cv.ClipvqaHead(c["T"], c["D"], c["C"], token_layout="tokens")
    other.load_state_dict(head.state_dict())
    with torch.no_grad():
        assert np.abs(other.eval()(*args).numpy() - probs).max() > 1e-3


def test_tsn_indices_match_upstream_sampler():
    cases = {k: v for k, v in META["tsn_test_clips"].items() if k.endswith("_1")}
    assert len(cases) >= 8
    for key, expected in cases.items():
        frames, segments, _ = (int(p) for p in key.split("_"))
        assert tsn_indices(frames, segments).tolist() == expected, key


# --------------------------------------------------------------------------- soft labels
def test_soft_labels_values_and_sums():
    levels = np.array([0.0, 2.0, 2.5, 5.0, 7.0, -1.0])
    p = cv.soft_labels(levels)
    assert p.shape == (6, 6)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    z = 1 + 2 * math.exp(-1) + 2 * math.exp(-4) + math.exp(-9)  # a centre with 2 levels each side
    assert p[1, 2] == pytest.approx(1 / z, rel=1e-12)
    assert p[1, 1] == pytest.approx(math.exp(-1) / z, rel=1e-12)
    np.testing.assert_allclose(p[2, 2], p[2, 3], rtol=1e-12)  # halfway: two equal peaks
    assert p[0].argmax() == 0 and p[3].argmax() == 5
    assert np.all(np.isfinite(p)) and p[4].argmax() == 5 and p[5].argmax() == 0
    with pytest.raises(cv.ClipvqaError, match="finite"):
        cv.soft_labels([1.0, float("nan")])


def test_scale_mapping_for_1_5_and_0_100_datasets():
    np.testing.assert_allclose(cv.to_levels([1.0, 3.0, 5.0], "1-5"), [0.0, 2.5, 5.0])
    np.testing.assert_allclose(cv.to_levels([0.0, 50.0, 100.0], "0-100"), [0.0, 2.5, 5.0])
    np.testing.assert_allclose(cv.to_levels([60.0], "0-100"), [3.0])  # upstream: mos / 20
    mixed = cv.to_levels([4.2, 84.0], ["1-5", "0-100"])
    np.testing.assert_allclose(mixed, [4.0, 4.2])
    # the level word of each centre, in the order of upstream's labels.csv
    assert cv.LEVEL_WORDS == ("bad", "poor", "fair", "good", "great", "excellent")
    assert cv.soft_labels(cv.to_levels([5.0], "1-5"))[0].argmax() == 5  # "excellent"
    assert cv.soft_labels(cv.to_levels([0.0], "0-100"))[0].argmax() == 0  # "bad"


# --------------------------------------------------------------------------- loss
def test_loss_is_zero_at_the_soft_label_and_one_minus_cosine_elsewhere():
    target = torch.from_numpy(cv.soft_labels([1.3, 4.0]).astype(np.float32))
    assert float(cv.cosine_label_loss(target.clone(), target)) == pytest.approx(0.0, abs=1e-6)
    probs = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]], requires_grad=True)
    t = target.double()
    expected = 1 - (t[0, 0] / t[0].norm() + t[1, 5] / t[1].norm()) / 2
    loss = cv.cosine_label_loss(probs, target)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert torch.isfinite(probs.grad).all() and probs.grad.abs().sum() > 0


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("n_frames,n_keys,width", [(1, 4, 96), (8, 9, 64), (32, 196, 96)])
def test_head_shapes_for_any_number_of_frames(n_frames, n_keys, width):
    torch.manual_seed(0)
    head = cv.ClipvqaHead(n_frames, 64, width).eval()
    frames = torch.randn(3, n_frames, 64)
    keys = torch.randn(3, n_frames, n_keys, width)
    with torch.no_grad():
        probs = head(frames, keys, torch.randn(6, 64))
    assert probs.shape == (3, 6)
    np.testing.assert_allclose(probs.sum(1).numpy(), 1.0, rtol=1e-6)
    with pytest.raises(RuntimeError):  # T is part of the model: other T is refused
        head(torch.randn(3, n_frames + 1, 64), torch.randn(3, n_frames + 1, n_keys, width),
             torch.randn(6, 64))


@pytest.mark.parametrize("stored,frames", [(1, 32), (5, 32), (32, 32), (64, 32), (100, 8)])
def test_tsn_picks_the_centre_of_each_segment(stored, frames):
    idx = tsn_indices(stored, frames)
    assert idx.shape == (frames,) and idx.min() >= 0 and idx.max() <= stored - 1
    assert np.all(np.diff(idx) >= 0)
    if stored >= frames:
        assert len(set(idx.tolist())) == frames  # no frame twice
        edges = np.arange(frames + 1) * stored / frames
        assert np.all((idx >= np.floor(edges[:-1])) & (idx < edges[1:]))
    else:
        assert set(idx.tolist()) == set(range(stored))  # every frame used, some repeated
    with pytest.raises(FeatureError, match="no frames"):
        tsn_indices(0, frames)


# --------------------------------------------------------------------------- synthetic data
@pytest.mark.parametrize("decode", cv.DECODERS)
def test_head_learns_a_separable_toy_problem(decode):
    table = toy_table()
    train, val, test = table.take(range(64)), table.take(range(64, 80)), table.take(range(80, 96))
    model = create_regressor("clipvqa", decode=decode, **FAST)
    info = model.fit(train, val)
    pred = model.predict(test)
    high = test.mos > 3
    assert pred[high].min() > pred[~high].max(), (pred, test.mos)  # every pair in order
    assert info["decode"] == decode and info["vat_keys"] == "semantic/frame_tokens"
    assert info["variant"] == "patch tokens" and 1 <= info["best_epoch"] <= FAST["epochs"]
    probs = model.predict_proba(test)
    assert probs.shape == (16, 6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    # the most likely level follows the MOS
    assert probs[high].argmax(1).mean() > probs[~high].argmax(1).mean()


def test_frozen_parts_stay_frozen_and_can_be_trained():
    table = toy_table(48)
    frozen = create_regressor("clipvqa", epochs=2, lr=1e-2, warmup_epochs=0)
    frozen.fit(table.take(range(32)), table.take(range(32, 48)))
    assert frozen.fit_info["logit_scale"] == pytest.approx(math.log(100.0), abs=1e-6)
    free = create_regressor("clipvqa", epochs=2, lr=1e-2, warmup_epochs=0,
                            train_logit_scale=True, train_conv=True)
    free.fit(table.take(range(32)), table.take(range(32, 48)))
    assert free.fit_info["logit_scale"] != pytest.approx(math.log(100.0), abs=1e-4)
    assert free.fit_info["n_parameters"] == frozen.fit_info["n_parameters"] + 64 * 64 * 8 + 1
    assert not torch.equal(free._head.conv2.weight, frozen._head.conv2.weight)


def test_expectation_decoder_is_the_mean_level():
    probs = cv.soft_labels([0.7, 3.2])
    np.testing.assert_allclose(cv.expected_level(probs), probs @ np.arange(6.0))
    np.testing.assert_allclose(cv.decode_levels(np.eye(6), "expectation"), np.arange(6.0))
    with pytest.raises(cv.ClipvqaError, match="choose one of svr, expectation"):
        cv.decode_levels(probs, "argmax")


@pytest.mark.parametrize("decode", cv.DECODERS)
def test_decode_round_trip_save_load_gives_identical_predictions(decode, tmp_path):
    table = toy_table(64, scale="0-100")
    model = create_regressor("clipvqa", decode=decode, epochs=3, lr=1e-3, warmup_epochs=0)
    model.fit(table.take(range(40)), table.take(range(40, 52)))
    test = table.take(range(52, 64))
    pred, probs = model.predict(test), model.predict_proba(test)
    assert np.all((pred >= -20) & (pred <= 120))  # on the 0-100 scale of the videos
    folder = model.save(tmp_path / decode)
    assert not (folder / WEIGHTS_FILE).read_bytes().startswith(b"\x80")  # not a pickle
    loaded = load_regressor(folder)
    np.testing.assert_array_equal(loaded.predict(test), pred)
    np.testing.assert_array_equal(loaded.predict_proba(test), probs)
    assert loaded.fit_info["decode"] == decode
    # the saved SVR decoder predicts like scikit-learn's SVR() on the training soft labels
    from sklearn.svm import SVR

    levels = cv.to_levels(table.take(range(40)).mos, "0-100")
    reference = SVR().fit(cv.soft_labels(levels), levels)
    np.testing.assert_allclose(loaded._svr.predict(probs), reference.predict(probs),
                               rtol=1e-9, atol=1e-9)
    if decode == "expectation":
        np.testing.assert_allclose(pred, 20 * cv.expected_level(probs), rtol=1e-9)


def test_bad_parameters_and_mismatched_inputs_are_named():
    with pytest.raises(RegressorError, match="'decode' must be one of: svr, expectation"):
        create_regressor("clipvqa", decode="argmax")
    with pytest.raises(RegressorError, match="'token_layout' must be one of"):
        create_regressor("clipvqa", token_layout="sideways")
    with pytest.raises(RegressorError, match="'epochs' must be an integer >= 1"):
        create_regressor("clipvqa", epochs=0)
    table = toy_table(32)
    table.inputs[LEVEL_TEXT] = table.inputs[LEVEL_TEXT][:, :5]
    with pytest.raises(RegressorError, match="6 level words"):
        create_regressor("clipvqa", epochs=1).fit(table)
    model = create_regressor("clipvqa", epochs=1)
    model.fit(toy_table(32))
    other = toy_table(32, seed=1)  # other level text embeddings: another CLIP
    with pytest.raises(RegressorError, match="level-word text embeddings .* differ"):
        model.predict(other)
    windows = toy_table(32)
    windows.info["role_sources"] = {CLIP_KEYS: "semantic/window_embeddings"}
    with pytest.raises(RegressorError, match="trained with VAT keys from 'semantic/frame_tok"):
        model.predict(windows)


def test_nan_features_are_filled_with_training_means():
    table = toy_table(48)
    table.inputs[CLIP_FRAMES][3, 2, :5] = np.nan
    table.inputs[CLIP_KEYS][5, 1, 0, :] = np.nan
    model = create_regressor("clipvqa", epochs=2, warmup_epochs=0)
    model.fit(table.take(range(32)), table.take(range(32, 48)))
    assert np.all(np.isfinite(model.predict(table)))


# --------------------------------------------------------------------------- store and stages
def write_store(folder: Path, name: str, *, n: int = 40, tokens: bool = True, seed: int = 0,
                text_seed: int | None = 0, scale: str = "1-5", frames=(6, 12, 20, 40)):
    """A semantic branch with the frame view (frame embeddings, optional patch tokens,
    window embeddings, level text) for ``n`` videos of varying frame counts, and its manifest.
    Returns (store path, manifest path)."""
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
    from vqa_pipe.pipeline.store import FeatureStore

    rng = np.random.default_rng(seed)
    dim, width, n_tokens, n_windows = 64, 48, 6, 4
    direction = rng.normal(size=dim)
    ids = [f"{name}{i:03d}" for i in range(n)]
    q = rng.uniform(0, 1, n)
    store = FeatureStore.create_or_open(folder / f"{name}.zarr", ids, part_size=8)
    store.ensure_branch("semantic", {"test": "synthetic frame view", "random_weights": False})
    for part in range(store.n_parts):
        results = {}
        for vid in store.part_ids(part):
            i = ids.index(vid)
            f = frames[i % len(frames)]
            arrays = {
                "frame_embeddings": (rng.normal(size=(f, dim)) + 4 * q[i] * direction)
                .astype(np.float32),
                "window_embeddings": rng.normal(size=(f, n_windows, dim)).astype(np.float16),
                "frame_times": np.arange(f, dtype=np.float32) / 2,
            }
            if tokens:
                arrays["frame_tokens"] = rng.normal(size=(f, n_tokens, width)).astype(np.float16)
            results[vid] = arrays
        store.write_part("semantic", part, results)
    if text_seed is not None:  # None: a store made before the frame view had level words
        text = np.random.default_rng(100 + text_seed).normal(size=(6, dim)).astype(np.float32)
        store.put_branch_array("semantic", "level_text_embeddings", text)
    low, top = (1.0, 5.0) if scale == "1-5" else (0.0, 100.0)
    rows = [ManifestRow(video_id=v, path=Path(f"{v}.mp4"), mos=float(low + (top - low) * q[i]),
                        mos_scale=scale) for i, v in enumerate(ids)]
    return folder / f"{name}.zarr", write_manifest(rows, folder / f"{name}.csv")


ROLES = (CLIP_FRAMES, CLIP_KEYS, LEVEL_TEXT)


def test_table_reads_the_frame_view_with_tokens_or_windows(tmp_path):
    with_tokens = write_store(tmp_path, "tok", n=12)
    no_tokens = write_store(tmp_path, "win", n=12, tokens=False)
    spec = TableSpec(clip_frames=16)
    table = load_table(*with_tokens, ROLES, spec)
    assert table.input_shapes() == {CLIP_FRAMES: [16, 64], CLIP_KEYS: [16, 6, 48],
                                    LEVEL_TEXT: [6, 64]}
    assert table.inputs[CLIP_KEYS].dtype == np.float16
    assert table.inputs[CLIP_FRAMES].dtype == np.float32
    assert table.info["role_sources"] == {
        CLIP_FRAMES: "semantic/frame_embeddings", CLIP_KEYS: "semantic/frame_tokens",
        LEVEL_TEXT: "meta/semantic/level_text_embeddings"}
    win = load_table(*no_tokens, ROLES, spec)
    assert win.input_shapes()[CLIP_KEYS] == [16, 4, 64]
    assert win.info["role_sources"][CLIP_KEYS] == "semantic/window_embeddings"
    # the frames are the TSN choice of the stored frames (video 1 has 12 frames)
    from vqa_pipe.pipeline.store import FeatureStore

    stored = FeatureStore.open(with_tokens[0]).read("semantic", "frame_embeddings")["tok001"]
    np.testing.assert_array_equal(table.inputs[CLIP_FRAMES][1], stored[tsn_indices(12, 16)])
    assert TableSpec.from_json(spec.to_json()) == spec
    assert TableSpec.from_json({"n_frames": 8}).clip_frames == 32


def test_missing_frame_view_is_named(tmp_path):
    no_text = write_store(tmp_path, "old", n=8, text_seed=None)
    with pytest.raises(FeatureError, match="'clipvqa' needs the quality-level text embeddings "
                                           "'level_text_embeddings'.*re-extract"):
        load_table(*no_text, ROLES, who="regressor 'clipvqa'")
    from vqa_pipe.pipeline.manifest import ManifestRow, write_manifest
    from vqa_pipe.pipeline.store import FeatureStore

    store = FeatureStore.create_or_open(tmp_path / "scores.zarr", ["a"], part_size=1)
    store.ensure_branch("semantic", {"random_weights": False})
    store.write_part("semantic", 0, {"a": {"frame_scores": np.zeros((3, 4), np.float32)}})
    manifest = write_manifest([ManifestRow("a", Path("a.mp4"), 3.0, "1-5")], tmp_path / "a.csv")
    with pytest.raises(FeatureError, match="array 'frame_embeddings' of the 'semantic' branch"):
        load_table(tmp_path / "scores.zarr", manifest, [CLIP_FRAMES], who="regressor 'clipvqa'")


@pytest.fixture(scope="module")
def clipvqa_run(tmp_path_factory):
    """A clipvqa run of 2 random splits through ``stages.train`` on a store with tokens."""
    from vqa_pipe.stages.train import DatasetRef, TrainOptions, run_train

    folder = tmp_path_factory.mktemp("clipvqa_run")
    train = DatasetRef(*write_store(folder, "tok", n=48), name="tok")
    other = DatasetRef(*write_store(folder, "tok_b", n=24, seed=1, scale="0-100"), name="tok_b")
    opts = TrainOptions(regressor="clipvqa", params=dict(FAST, epochs=4), splits=2,
                        clip_frames=8)
    result = run_train(train, folder / "run", opts, tests=[other])
    return folder, result


def test_clipvqa_trains_and_tests_cross_dataset_through_the_train_stage(clipvqa_run):
    folder, result = clipvqa_run
    run = folder / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["roles"] == list(ROLES)
    assert config["input_shapes"][CLIP_KEYS] == [8, 6, 48]
    assert config["options"]["spec"]["clip_frames"] == 8
    assert set(result.summary) == {"test", "tok_b"}
    for split_info in result.fit_info.values():
        assert split_info["vat_keys"] == "semantic/frame_tokens"
    assert len(list((run / "models").iterdir())) == 2


def test_evaluate_a_clipvqa_run_on_another_store(clipvqa_run):
    from vqa_pipe.stages.evaluate import EvaluateError, run_evaluate

    folder, result = clipvqa_run
    again = run_evaluate(folder / "run", folder / "tok_b.zarr", folder / "tok_b.csv",
                         folder / "eval")
    assert len(again.per_split) == 2
    # the same models and inputs as the train stage's cross-dataset predictions
    trained = {(r.split, r.video_id): r.prediction for r in result.predictions
               if r.test_set == "tok_b"}
    assert len(trained) == len(again.predictions) == 2 * 24
    for row in again.predictions:
        assert row.prediction == pytest.approx(trained[(row.split, row.video_id)], rel=1e-9)
    # a store without tokens has other VAT keys: refused, saying so
    win = write_store(folder, "win", n=8, tokens=False)
    with pytest.raises((EvaluateError, RegressorError, FeatureError),
                       match="trained on .*8, 6, 48|frame_tokens"):
        run_evaluate(folder / "run", *win, folder / "eval_win")
    # a store made with other level words / another CLIP: refused
    text = write_store(folder, "text", n=8, text_seed=1)
    with pytest.raises(RegressorError, match="level-word text embeddings"):
        run_evaluate(folder / "run", *text, folder / "eval_text")
