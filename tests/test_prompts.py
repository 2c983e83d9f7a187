from __future__ import annotations

import json

import numpy as np
import pytest
from vqa_pipe.pipeline.prompts import PromptError, load_prompts, score_windows


def test_default_prompts_cover_quality_factors_and_feelings():
    p = load_prompts()
    assert p.r == len(p.texts) == len(p.descriptions)
    for word in ("bright", "blurry", "noisy", "pleasant", "boring", "fearful"):
        assert word in p.descriptions
    assert set(p.set_names) == {"objective", "subjective"}
    assert p.texts[p.descriptions.index("blurry")] == "a blurry photo."
    assert len(p.feature_names()) == 2 * p.r


def test_softmax_groups():
    p = load_prompts()
    assert [len(g) for g in p.groups("all")] == [p.r]
    per_set = p.groups("per_set")
    assert len(per_set) == 2 and sum(len(g) for g in per_set) == p.r
    pairs = p.groups("pairs")
    assert all(len(g) == 2 for g in pairs) and len(pairs) == p.r // 2
    with pytest.raises(ValueError, match="softmax must be one of"):
        p.groups("bogus")


def _random_unit(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_score_windows_matches_hand_computation():
    rng = np.random.default_rng(0)
    p = load_prompts()
    win = _random_unit((4, 9, 16), rng)
    text = _random_unit((p.r, 16), rng)
    for mode in ("all", "per_set", "pairs"):
        groups = p.groups(mode)
        out = score_windows(win, text, 100.0, groups)
        assert out.shape == (4, 2 * p.r)
        logits = 100.0 * np.einsum("fkd,rd->fkr", win, text)
        probs = np.zeros_like(logits)
        for g in groups:
            e = np.exp(logits[..., g] - logits[..., g].max(-1, keepdims=True))
            probs[..., g] = e / e.sum(-1, keepdims=True)
        np.testing.assert_allclose(out[:, : p.r], probs.mean(1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[:, p.r :], probs.max(1), rtol=1e-5, atol=1e-6)
        # probabilities sum to one within each group, for every window
        for g in groups:
            np.testing.assert_allclose(probs[..., g].sum(-1), 1.0, rtol=1e-5)


def test_user_prompt_file(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(
        json.dumps(
            {"name": "mine", "sets": {"q": {"template": "{} video", "pairs": [["good", "bad"]]}}}
        )
    )
    p = load_prompts(f)
    assert p.texts == ("good video", "bad video") and p.name == "mine"


@pytest.mark.parametrize(
    "spec,match",
    [
        ({}, "sets"),
        ({"sets": {"q": {"template": "no slot", "pairs": [["a", "b"]]}}}, "template"),
        ({"sets": {"q": {"template": "{}", "pairs": [["a"]]}}}, "pair 0"),
        ({"sets": {"q": {"template": "{}", "pairs": [["a", "b"], ["a", "c"]]}}}, "duplicate"),
    ],
)
def test_bad_prompt_files_are_named(tmp_path, spec, match):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(spec))
    with pytest.raises(PromptError, match=match) as err:
        load_prompts(f)
    assert "bad.json" in str(err.value)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        load_prompts(tmp_path / "nope.json")


def test_default_feature_names_are_unique():
    p = load_prompts()
    names = p.feature_names()
    assert len(set(names)) == len(names) == 2 * p.r
    assert len(set(p.descriptions)) == p.r


def test_a_description_used_twice_is_refused_naming_both_places(tmp_path):
    f = tmp_path / "twice.json"
    f.write_text(json.dumps({"sets": {
        "objective": {"template": "a {} photo.", "pairs": [["colorful", "dull"]]},
        "subjective": {"template": "a photo that feels {}.", "pairs": [["exciting", "dull"]]},
    }}))
    with pytest.raises(
        PromptError,
        match=r'twice.json.*duplicate description "dull" appears twice.*"objective" pair 0'
        r'.*"subjective" pair 0.*unique',
    ):
        load_prompts(f)
