"""Knowledge quality of a feature layer, after Cooper et al. 2025 (docs/methods.md, "Knowledge
quality of a layer"). Pixel features are C-dim samples with class labels.

- separation `S = mean_c (avg intra-class |cos|) − mean over class pairs (avg inter-class |cos|)`
  (intra-class averages over pairs of distinct samples);
- information `I = (1 − mean_c min intra-class |cos|) · H̄ / ln 5`: per class, the explained-variance
  ratios of the centred samples give ED (the number of components that reach 95 % of the variance)
  and H (Shannon entropy, natural log, of the top ⌊ED⌋ ratios renormalised); H̄ averages H over classes;
- efficiency `E = (2 · mean_c MinInterDist_c / mean_c AvgNorm_c) · (n/π)^{1/d}`: MinInterDist_c the
  smallest Euclidean distance from a class-c sample to a sample of another class, AvgNorm_c the mean
  feature norm of class c, n the number of samples, d the number of non-zero global PCA ratios;
- `Q = S + √(I·E)`.

Classes with fewer than two samples count in the inter-class parts only. Pairwise quantities are
computed block by block (`chunk` rows at a time), so memory stays O(chunk · n).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from runtime.errors import UserError
from runtime.metadata import IGNORE_INDEX
from train.losses.base import downsample_labels

VARIANCE_TARGET = 0.95
_ZERO_RATIO = 1e-10  # explained-variance ratios below this count as zero (float64 round-off)


def subsample(x: torch.Tensor, y: torch.Tensor, per_class: int = 500,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `per_class` random rows of `x` [n, C] per class of `y` [n], grouped by class."""
    xs, ys = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        if idx.numel() > per_class:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:per_class].to(idx.device)]
        xs.append(x[idx])
        ys.append(y[idx])
    if not xs:
        return x[:0], y[:0]
    return torch.cat(xs), torch.cat(ys)


def sample_pixels(features: torch.Tensor, labels: torch.Tensor, per_class: int = 500,
                  ignore: int = IGNORE_INDEX, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel samples of an N x C x h x w feature map: X [n, C] (float32, CPU) and y [n] (int64).

    Labels (N x H x W) are nearest-downsampled to h x w; ignored pixels are dropped; each class keeps
    at most `per_class` random pixels. To sample over many batches, call per batch and `subsample`
    the concatenation.
    """
    n, c, h, w = features.shape
    y = downsample_labels(labels.to(features.device), (h, w)).flatten()
    x = features.detach().float().permute(0, 2, 3, 1).reshape(-1, c)
    keep = y != ignore
    x, y = subsample(x[keep], y[keep], per_class, generator)
    return x.cpu(), y.cpu()


def _explained_variance_ratios(x: torch.Tensor) -> torch.Tensor:
    """Descending PCA explained-variance ratios of the rows of x (float64), via the smaller Gram."""
    xc = x.double() - x.double().mean(0, keepdim=True)
    gram = xc @ xc.T if xc.shape[0] <= xc.shape[1] else xc.T @ xc
    ev = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)
    total = ev.sum()
    return ev / total if total > 0 else torch.zeros_like(ev)


def effective_dimension_entropy(x: torch.Tensor) -> tuple[int, float]:
    """(ED, H) of one class: ED components reach 95 % of the variance; H = entropy of their ratios."""
    ratios = _explained_variance_ratios(x)
    if ratios.sum() <= 0:
        return 0, 0.0
    ed = int((torch.cumsum(ratios, 0) < VARIANCE_TARGET - 1e-12).sum()) + 1
    top = ratios[: min(ed, ratios.numel())]
    p = top / top.sum()
    p = p[p > 0]
    return ed, float(-(p * p.log()).sum())


def knowledge_quality(x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> dict[str, float]:
    """Q = S + √(I·E) and its parts for samples x [n, C] with labels y [n]; also n and d."""
    x = torch.as_tensor(x).float().cpu()
    y = torch.as_tensor(y).long().cpu()
    classes = torch.unique(y)
    k = classes.numel()
    if k < 2:
        raise UserError(f"knowledge quality needs samples of at least two classes, got {k}; "
                        "use more images or a layer whose labels are not all ignored")
    n = x.shape[0]
    cls_idx = torch.searchsorted(classes, y)
    onehot = F.one_hot(cls_idx, k).float()
    counts = onehot.sum(0)
    xn = F.normalize(x, dim=1)
    norms = x.norm(dim=1)

    abs_cos_sum = torch.zeros(k, k, dtype=torch.float64)  # Σ |cos| over sample pairs, per class pair
    min_intra = torch.full((k,), math.inf, dtype=torch.float64)
    min_inter_dist = torch.full((k,), math.inf, dtype=torch.float64)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        ci = cls_idx[rows]
        g = (xn[rows] @ xn.T).abs()
        abs_cos_sum.index_add_(0, ci, (g @ onehot).double())
        same = ci[:, None] == cls_idx[None, :]
        self_pair = torch.zeros_like(same)
        self_pair[torch.arange(g.shape[0]), torch.arange(start, rows.stop)] = True
        g_intra = g.masked_fill(~same | self_pair, math.inf).amin(1).double()
        min_intra.scatter_reduce_(0, ci, g_intra, reduce="amin")
        dist = torch.cdist(x[rows], x).masked_fill(same, math.inf).amin(1).double()
        min_inter_dist.scatter_reduce_(0, ci, dist, reduce="amin")

    # |cos(x, x)| is 1 for a non-zero x and 0 for x = 0: remove the self pairs from the intra sums.
    self_sum = torch.zeros(k, dtype=torch.float64).index_add_(0, cls_idx, (xn * xn).sum(1).double())
    c64 = counts.double()
    multi = counts >= 2
    intra = (abs_cos_sum.diagonal() - self_sum)[multi] / (c64[multi] * (c64[multi] - 1))
    iu = torch.triu_indices(k, k, offset=1)
    inter = abs_cos_sum[iu[0], iu[1]] / (c64[iu[0]] * c64[iu[1]])
    separation = float(intra.mean() - inter.mean()) if multi.any() else float(-inter.mean())

    entropies = [effective_dimension_entropy(x[cls_idx == i])[1] for i in range(k) if multi[i]]
    mean_h = sum(entropies) / len(entropies) if entropies else 0.0
    mean_min_intra = float(min_intra[multi].mean()) if multi.any() else 1.0
    information = (1.0 - mean_min_intra) * mean_h / math.log(5)

    d = int((_explained_variance_ratios(x) > _ZERO_RATIO).sum())
    avg_norm = torch.zeros(k, dtype=torch.float64).index_add_(0, cls_idx, norms.double()) / c64
    mean_norm = float(avg_norm.mean())
    if d == 0 or mean_norm == 0:
        efficiency = 0.0
    else:
        efficiency = 2.0 * float(min_inter_dist.mean()) / mean_norm * (n / math.pi) ** (1.0 / d)

    quality = separation + math.sqrt(max(information * efficiency, 0.0))
    return {"S": separation, "I": information, "E": efficiency, "Q": quality, "n": n, "d": d}
