"""Splits: random protocol, KoNViD-1k permutations, LSVQ official lists, id matching."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from vqa_pipe.pipeline.splits import (
    Split,
    SplitError,
    holdout_split,
    konvid_splits,
    lsvq_official_split,
    match_ids,
    random_splits,
    read_konvid_info,
    read_label_names,
)


def _parts(split):
    return set(split.train), set(split.val), set(split.test["test"])


def test_random_splits_are_disjoint_cover_everything_and_are_reproducible():
    ids = [f"v{i}" for i in range(200)]
    splits = random_splits(ids, 10, test_ratio=0.2, val_ratio=0.2, seed=3)
    assert len(splits) == 10
    for s in splits:
        train, val, test = _parts(s)
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(ids)
        assert (len(train), len(val), len(test)) == (128, 32, 40)
    assert len({tuple(sorted(s.test["test"])) for s in splits}) == 10  # all different
    again = random_splits(ids, 10, test_ratio=0.2, val_ratio=0.2, seed=3)
    assert [s.to_json() for s in again] == [s.to_json() for s in splits]
    assert Split.from_json(splits[0].to_json()) == splits[0]


def test_too_few_videos_for_the_splits():
    with pytest.raises(SplitError, match="too few videos for the splits: 6 labelled videos"):
        random_splits([f"v{i}" for i in range(6)], 10)
    with pytest.raises(SplitError, match="unique"):
        random_splits(["a", "a", "b"])


def test_holdout_split_refuses_leaks():
    with pytest.raises(SplitError, match="also used for training"):
        Split("x", train=("a", "b"), val=("c",), test={"t": ("a", "d", "e")})
    split = holdout_split([f"v{i}" for i in range(20)], {"other": ["x1", "x2", "x3"]}, seed=1)
    assert len(split.val) == 4 and len(split.train) == 16 and split.test["other"] == (
        "x1", "x2", "x3"
    )


def test_match_ids_variants_and_ambiguity():
    ids = ["yfcc-batch1/747", "A001", "3339962845", "ia-batch2/99"]
    names = ["yfcc-batch1/747.mp4", "A001.mp4", "KoNViD_1k_videos/3339962845.mp4", "nope.mp4"]
    found = match_ids(names, ids, what="labels")
    assert found == {
        "yfcc-batch1/747.mp4": "yfcc-batch1/747",
        "A001.mp4": "A001",
        "KoNViD_1k_videos/3339962845.mp4": "3339962845",
    }
    with pytest.raises(SplitError, match="several manifest ids"):
        match_ids(["747.mp4"], ["yfcc-batch1/747", "yfcc-batch2/747"], what="labels")


def _konvid_ids(shared_data):
    with open(shared_data / "labels" / "KONVID_1K_metadata.csv", newline="") as fh:
        return [row["flickr_id"] for row in csv.DictReader(fh)]


def test_konvid_permutations_follow_the_info_file(shared_data):
    info = shared_data / "labels" / "KoNViD-1kinfo.mat"
    names, perms = read_konvid_info(info)
    assert len(names) == 1200 and perms.shape == (1000, 1200)
    assert all(sorted(p) == list(range(1200)) for p in perms[:5])  # permutations indeed
    ids = _konvid_ids(shared_data)
    splits = konvid_splits(info, ids, 3, start=2)
    for k, s in enumerate(splits, start=2):
        train, val, test = _parts(s)
        assert (len(train), len(val), len(test)) == (720, 240, 240)
        assert not (train & val or train & test or val & test)
        # the first 60 % of permutation k train (matched by the Flickr id of the file name)
        first = {names[i].split("_")[0] for i in perms[k][:720]}
        assert train == first
    assert splits[0].name == "konvid002"


def test_konvid_missing_videos_are_named_or_left_out_on_request(shared_data):
    info = shared_data / "labels" / "KoNViD-1kinfo.mat"
    ids = _konvid_ids(shared_data)[:-5]
    with pytest.raises(SplitError, match="5 of the 1200 KoNViD-1k videos"):
        konvid_splits(info, ids, 1)
    split = konvid_splits(info, ids, 1, allow_missing=True)[0]
    assert len(split.train) + len(split.val) + len(split.test["test"]) == 1195
    with pytest.raises(SplitError, match="1000 permutations"):
        konvid_splits(info, _konvid_ids(shared_data), 2, start=999)


def test_lsvq_official_split(shared_data):
    labels = shared_data / "labels"
    train_names = read_label_names(labels / "train_labels.txt")
    test_names = read_label_names(labels / "LSVQ" / "labels_test.txt")
    hd_names = read_label_names(labels / "LSVQ" / "labels_1080p.txt")
    # manifest ids as the LSVQ builder makes them: the path without extension
    ids = [n.rsplit(".", 1)[0] for n in train_names + test_names + hd_names]
    split = lsvq_official_split(
        labels / "train_labels.txt",
        {"test": labels / "LSVQ" / "labels_test.txt",
         "test-1080p": labels / "LSVQ" / "labels_1080p.txt"},
        ids,
        val_ratio=0.1,
    )
    assert len(split.train) + len(split.val) == 28056
    assert len(split.val) == round(0.1 * 28056)
    assert len(split.test["test"]) == 7186 and len(split.test["test-1080p"]) == 3573
    assert split.test["test"][0] == "yfcc-batch1/747"
    # a test video without features is named, unless asked to leave it out
    fewer = [i for i in ids if i != "yfcc-batch1/747"]
    with pytest.raises(SplitError, match="1 of the 7186 'test' videos"):
        lsvq_official_split(labels / "train_labels.txt",
                            {"test": labels / "LSVQ" / "labels_test.txt"}, fewer)
    ok = lsvq_official_split(labels / "train_labels.txt",
                             {"test": labels / "LSVQ" / "labels_test.txt"}, fewer,
                             allow_missing=True)
    assert len(ok.test["test"]) == 7185
    assert math.isclose(len(ok.val) / 28056, 0.2, abs_tol=1e-3)
    assert np.intersect1d(ok.train, ok.test["test"]).size == 0
