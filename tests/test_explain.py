"""Explanations (exact for linear models), prompt files rebuilt from a store configuration,
and the zero-shot scoring against CLIP-IQA's own code (fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from vqa_pipe.pipeline.bundle import BundleError, prompt_spec_from_config, training_stats
from vqa_pipe.pipeline.explain import Explainer, predict_unit, window_probabilities
from vqa_pipe.pipeline.feature_table import FeatureTable
from vqa_pipe.pipeline.prompts import SOFTMAX_MODES, load_prompts, parse_prompts, score_windows
from vqa_pipe.pipeline.regressors import create_regressor
from vqa_pipe.stages.score import ZERO_SHOT_QUALITY, zero_shot_prompts

FIXTURES = Path(__file__).parent / "fixtures" / "clipiqa"
R = 3  # descriptions
LAYOUT = [["semantic", "frame_scores", 4 * R], ["videval", "features", 5]]


def _table(n: int, seed: int = 0) -> tuple[FeatureTable, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4 * R + 5)).astype(np.float32)
    y = 1 + 4 * np.clip(0.2 + 0.5 * x[:, 1] - 0.3 * x[:, R + 2] + 0.2 * x[:, -1]
                        + 0.05 * rng.standard_normal(n), 0, 1)
    return FeatureTable([f"v{i}" for i in range(n)], y, "1-5", {"flat": x}), x


def test_linear_contributions_are_exact_and_add_up(tmp_path):
    """Occlusion to the training mean equals coef * (x - mean) summed over a description's
    columns, for ridge, and the contributions plus the reference give the score."""
    table, x = _table(60)
    model = create_regressor("ridge", alpha=0.5)
    model.fit(table)
    stats = training_stats(table, x[:, : 4 * R])
    explainer = Explainer([model], ["flat"], LAYOUT, ["a", "b", "c"], stats, span=4.0, low=1.0,
                          linear=True)
    frames = np.random.default_rng(1).random((5, 2 * R)).astype(np.float32)
    video = {"flat": x[7:8]}
    exp = explainer.explain("v7", video, frames, np.arange(5) * 0.5)

    model.save(tmp_path / "ridge")
    w = load_file(str(tmp_path / "ridge" / "weights.safetensors"))
    coef = w["weights"] / w["scaler.scale"] * w["target"][1]  # unit scale per raw feature
    mean = stats["role.flat.mean"].astype(np.float64)
    for d, c in enumerate(exp.contributions):
        cols = [d, R + d, 2 * R + d, 3 * R + d]
        expected = 4.0 * float(np.sum(coef[cols] * (x[7, cols].astype(np.float64) - mean[cols])))
        assert c["contribution"] == pytest.approx(expected, abs=1e-6)
    score = 1.0 + 4.0 * model.predict_unit(table.take([7]))[0]
    total = exp.reference + sum(c["contribution"] for c in exp.contributions)
    assert total == pytest.approx(score, abs=1e-6) and exp.exact
    # the non-semantic block (videval) is never occluded: its weight does not enter
    assert abs(sum(c["contribution"] for c in exp.contributions)) > 1e-4


class _LinearSequence:
    """A stand-in model linear in the sequence input: sum_t,c w[t, c] x[t, c]."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def predict_unit(self, table: FeatureTable) -> np.ndarray:
        return (table.inputs["sequence"].astype(np.float64) * self.w).sum(axis=(1, 2))


def test_sequence_occlusion_uses_both_columns_of_a_description_and_frame_curve():
    rng = np.random.default_rng(2)
    t = 4
    w = rng.standard_normal((t, 2 * R))
    seqs = rng.random((20, t, 2 * R)).astype(np.float32)
    table = FeatureTable([f"v{i}" for i in range(20)], np.full(20, 50.0), "0-100",
                         {"sequence": seqs})
    stats = training_stats(table, None)
    explainer = Explainer([_LinearSequence(w)], ["sequence"], [], ["a", "b", "c"], stats,
                          span=100.0, low=0.0)
    frames = rng.random((3, 2 * R)).astype(np.float32)
    exp = explainer.explain("v3", {"sequence": seqs[3:4]}, frames, np.array([0.0, 1.0, 2.0]))
    m = stats["role.sequence.mean"].astype(np.float64)
    for d, c in enumerate(exp.contributions):
        cols = [d, R + d]
        expected = 100.0 * float(np.sum(w[:, cols] * (seqs[3][:, cols] - m[:, cols])))
        assert c["contribution"] == pytest.approx(expected, abs=1e-4)
    # frame t: every time step holds frame t's scores
    expected_curve = 100.0 * np.array([float(np.sum(w * f[None, :])) for f in frames])
    np.testing.assert_allclose(exp.frame_curve, expected_curve, atol=1e-4)
    assert exp.deviations == []  # no semantic_flat statistics: no z-scores, said by omission


def test_ensemble_prediction_is_the_mean_of_its_members():
    table, _ = _table(40)
    models = [create_regressor("ridge", alpha=a) for a in (0.1, 10.0)]
    for m in models:
        m.fit(table)
    want = np.mean([m.predict_unit(table) for m in models], axis=0)
    np.testing.assert_allclose(predict_unit(models, table.inputs), want, rtol=1e-12)


def test_deviations_are_signed_z_scores_against_the_training_videos():
    table, x = _table(30)
    stats = training_stats(table, x[:, : 4 * R])
    explainer = Explainer([], ["flat"], LAYOUT, ["a", "b", "c"], stats, span=4, low=1)
    frames = np.zeros((2, 2 * R), dtype=np.float32)
    frames[:, 1] = 1.0  # description b: certain in every window and frame
    dev = {d["description"]: d for d in explainer.deviations(frames)}
    mean, std = x[:, 1].mean(), x[:, 1].std()
    assert dev["b"]["z"] == pytest.approx((1.0 - mean) / std, rel=1e-5) and dev["b"]["z"] > 0
    assert dev["a"]["z"] < 0


def _config(prompts) -> dict:
    return {"prompts": prompts.to_config(), "feature_names": prompts.feature_names()}


@pytest.mark.parametrize("source", ["default", "clipiqa"])
def test_prompt_file_rebuilt_from_a_store_configuration(source):
    prompts = load_prompts("default" if source == "default" else zero_shot_prompts())
    again = parse_prompts(prompt_spec_from_config(_config(prompts)))
    assert again.texts == prompts.texts and again.feature_names() == prompts.feature_names()
    for mode in SOFTMAX_MODES:
        assert [list(g) for g in again.groups(mode)] == [list(g) for g in prompts.groups(mode)]


def test_prompt_template_containing_the_description():
    spec = {"name": "t", "sets": {"s": {"template": "a {} a photo.", "pairs": [["a", "b"]]}}}
    prompts = parse_prompts(spec)
    assert prompt_spec_from_config(_config(prompts))["sets"]["s"]["template"] == "a {} a photo."
    broken = _config(prompts)
    broken["prompts"]["texts"] = ["a a a photo.", "b photo, a b"]
    with pytest.raises(BundleError, match="no single template"):
        prompt_spec_from_config(broken)


def test_window_probabilities_average_to_the_stored_frame_scores():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((3, 4, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    text = rng.standard_normal((6, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    groups = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    per_window = window_probabilities(emb, text, 50.0, groups)
    frame = score_windows(emb, text, 50.0, groups)
    np.testing.assert_allclose(per_window.mean(axis=1), frame[:, :6], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_window.max(axis=1), frame[:, 6:], rtol=1e-5, atol=1e-6)


def test_zero_shot_scoring_matches_clip_iqa():
    """vqa-pipe's CLIP-IQA prompts are upstream's, and its per-pair softmax on upstream's own
    CLIP features gives upstream CLIPIQAFixed's probabilities (fixtures/clipiqa/README.md)."""
    ref = np.load(FIXTURES / "reference.npz")
    meta = json.loads((FIXTURES / "reference.json").read_text())
    prompts = load_prompts(zero_shot_prompts())
    assert list(prompts.texts) == [t for pair in meta["pairs"] for t in pair]
    assert prompts.descriptions[0] == ZERO_SHOT_QUALITY
    scores = score_windows(ref["image_features"][:, None, :], ref["text_features"],
                           float(ref["logit_scale"]), prompts.groups("pairs"))
    first_of_each_pair = scores[:, : prompts.r][:, 0::2]
    np.testing.assert_allclose(first_of_each_pair, ref["probs"], rtol=0, atol=2e-6)
    assert np.ptp(ref["probs"]) > 0.5  # the reference is not a degenerate all-0.5 output


@pytest.mark.parametrize("branch, options", [
    ("semantic", dict(clip_model="vqa-tiny-clip", grid="2x3", window_fit="cover",
                      softmax="pairs", fps="all", max_frames=5)),
    ("spatial", dict(spatial_clips=2, spatial_output="pooled", spatial_samplings=2,
                     spatial_seed=3)),
])
def test_a_recorded_branch_configuration_rebuilds_the_same_branch(branch, options, tmp_path):
    """What export records is enough to build the branch again, setting for setting."""
    from vqa_pipe.pipeline.branches import build_branches, recorded_config
    from vqa_pipe.pipeline.bundle import branch_build_options, config_differences

    (built,) = build_branches([branch], random_weights=True, **options)
    config = json.loads(json.dumps(recorded_config(built)))  # what the store records
    prompts = None
    if branch == "semantic":
        prompts = tmp_path / "p.json"
        prompts.write_text(json.dumps(prompt_spec_from_config(config)))
    again = branch_build_options(branch, config, prompts_file=prompts)
    (rebuilt,) = build_branches([branch], random_weights=True, **again)
    assert config_differences(config, json.loads(json.dumps(recorded_config(rebuilt)))) == []
    with pytest.raises(BundleError, match="cannot extract"):
        branch_build_options("videval", {})
    with pytest.raises(BundleError, match="did not record their options"):
        branch_build_options(branch, {k: v for k, v in config.items() if k != "options"})
