import math
from itertools import combinations

import pytest
import torch

from runtime.errors import UserError
from train.teachers.knowledge_quality import knowledge_quality, sample_pixels, subsample


def test_quality_parts_by_hand():
    # two classes, two 2-D samples each: class 0 = (1, 0), (2, 0); class 1 = (0, 1), (0, 3)
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1])
    q = knowledge_quality(x, y)
    # |cos| is 1 inside each class and 0 across: S = 1 - 0
    assert q["S"] == pytest.approx(1.0)
    # min intra |cos| = 1 in both classes -> I = 0
    assert q["I"] == pytest.approx(0.0, abs=1e-9)
    # MinInterDist: class 0 -> |(1,0)-(0,1)| = √2, class 1 -> √2; AvgNorm: 1.5, 2; d = 2, n = 4
    e = 2 * math.sqrt(2) / 1.75 * (4 / math.pi) ** 0.5
    assert q["E"] == pytest.approx(e, rel=1e-6)
    assert q["d"] == 2 and q["n"] == 4
    assert q["Q"] == pytest.approx(1.0)


def test_information_by_hand():
    # class 0: three samples whose centred versions span two directions with variances 2:1-ish
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    q = knowledge_quality(x, y)
    # class 0: pairwise |cos| = 0 -> min 0; centred samples e_i - (1/3)1 have two equal non-zero PCA ratios
    # (1/2, 1/2): ED = 2, H = ln 2. Class 1: samples (-1,0,0), (0,-1,0): |cos| 0, centred = ±(-1,1,0)/2,
    # one ratio (1): ED = 1, H = 0. I = (1 - 0) · (ln 2 + 0)/2 / ln 5.
    assert q["I"] == pytest.approx(math.log(2) / 2 / math.log(5), rel=1e-6)
    # S: intra |cos| 0 in both; inter: |cos(e_i, -e_j)| = 1 for i = j (two pairs of six) -> 1/3
    assert q["S"] == pytest.approx(0 - 2 / 6, rel=1e-6)


def reference_separation(x: torch.Tensor, y: torch.Tensor) -> float:
    cos = torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=2).abs()
    classes = sorted(set(y.tolist()))
    intra = []
    for c in classes:
        idx = [i for i in range(len(y)) if y[i] == c]
        intra.append(sum(cos[i, j].item() for i in idx for j in idx if i != j) / (len(idx) * (len(idx) - 1)))
    inter = []
    for a, b in combinations(classes, 2):
        ia = [i for i in range(len(y)) if y[i] == a]
        ib = [i for i in range(len(y)) if y[i] == b]
        inter.append(sum(cos[i, j].item() for i in ia for j in ib) / (len(ia) * len(ib)))
    return sum(intra) / len(intra) - sum(inter) / len(inter)


def test_separation_matches_loops_with_chunks():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 5, generator=g), torch.randint(0, 3, (30,), generator=g)
    ref = reference_separation(x, y)
    assert knowledge_quality(x, y, chunk=7)["S"] == pytest.approx(ref, rel=1e-5)
    assert knowledge_quality(x, y, chunk=7)["E"] == pytest.approx(knowledge_quality(x, y)["E"], rel=1e-6)


def test_a_separating_layer_ranks_above_a_random_one():
    g = torch.Generator().manual_seed(1)
    k, per, c = 4, 60, 16
    y = torch.arange(k).repeat_interleave(per)
    centres = torch.randn(k, c, generator=g) * 4
    separating = centres[y] + torch.randn(k * per, c, generator=g)
    random = torch.randn(k * per, c, generator=g) * 4
    qs, qr = knowledge_quality(separating, y), knowledge_quality(random, y)
    assert qs["Q"] > qr["Q"] and qs["S"] > qr["S"] and qs["E"] > qr["E"]


def test_sample_pixels_downsamples_labels_drops_ignore_and_caps_per_class():
    feats = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    labels = torch.full((2, 4, 4), 255)
    labels[0, 0, 0], labels[0, 0, 2], labels[1, 2, 2] = 0, 1, 1  # top-left of 2x2 blocks (nearest)
    x, y = sample_pixels(feats, labels, per_class=500)
    assert y.tolist() == [0, 1, 1]
    assert x.tolist() == [feats[0, :, 0, 0].tolist(), feats[0, :, 0, 1].tolist(), feats[1, :, 1, 1].tolist()]
    big_x, big_y = subsample(torch.randn(100, 2), torch.tensor([0] * 70 + [1] * 30), 20,
                             torch.Generator().manual_seed(0))
    assert torch.bincount(big_y).tolist() == [20, 20] and big_x.shape == (40, 2)


def test_one_class_is_a_user_error():
    with pytest.raises(UserError, match="at least two classes"):
        knowledge_quality(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
