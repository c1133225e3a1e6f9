"""Hard pseudo-labels on unlabeled frames (`distill.pseudo_labels=true`), after FixMatch's confidence mask
and Naive-Student's teacher labels.

At the student's logit size h x w (z_T resized bilinearly, as in KD), p_T = softmax(z_T) over classes:

1. `ŷ_i = argmax_k p_T,k,i` and `c_i = max_k p_T,k,i` (detached);
2. `m_i = [c_i ≥ θ]`, θ = `distill.pseudo_threshold`;
3. `L_pseudo = (1/N) Σ_i m_i · CE(z_S,i, ŷ_i)`, N = B·h·w: every pixel counts in the mean, so a pixel the
   teacher is unsure about contributes nothing and a threshold that keeps few pixels gives a small loss.

Term `pseudo` = λ · L_pseudo (λ = `distill.pseudo_weight`), on the unlabeled frames only; the fraction of
kept pixels is logged as `unlabeled.pseudo_kept`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pseudo_label_loss(z_s: torch.Tensor, z_t: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(`L_pseudo` above, the fraction of pixels kept) for B x K x h x w student and teacher logits of the
    same size (float32)."""
    with torch.no_grad():
        conf, target = F.softmax(z_t.float(), 1).max(1)
        keep = conf >= threshold
    ce = F.cross_entropy(z_s.float(), target, reduction="none")
    return (ce * keep).mean(), keep.float().mean()
