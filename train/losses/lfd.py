"""LFD: Logit-guided Feature Distillation (docs/methods.md, "LFD").

Everything runs at the student's logit size h x w (stride 8); labels are nearest-downsampled to h x w,
P = the valid pixels (label ≠ 255; every pixel of an unlabeled frame, where L_H is 0), p^τ = softmax(z/τ) over classes, z_T resized to h x w if needed.

1. Mask (detached): `d_i = Σ_k p_T^τ (log p_T^τ − log p_S^τ)` (`mask=kl`), the teacher entropy
   `−Σ_k p_T^τ log p_T^τ` (`mask=entropy`) or a constant (`mask=uniform`); per image
   `m_i = (1 − β) + β · d_i / mean_{j∈P} d_j` on P and 0 elsewhere, so m averages 1 over P.
2. `L_fea = Σ_{b,i} m_i ‖ν(φ(F_S))_i − ν(F_T)_i‖² / (C_T · |P|)`, φ = 1x1 conv + BN (C_S→C_T),
   ν = per-channel standardisation over (B, h, w) without affine. Each extra (student stage, teacher
   stage) pair adds the same term with its own φ, the teacher map resized to the student stage's size,
   m resized bilinearly and `Σ m` in place of |P| (Σ m = |P| for the main pair).
3. `c_k = mean_{i∈P} |p_T,k,i − p_S,k,i|` per image (τ = 1, detached), `w_k = K c_k / Σ_j c_j`;
   `L_aux = Σ_l (1/|P|) Σ_{i∈P} Σ_k w_k p̄_k,i (log p̄_k,i − log softmax(a_l)_k,i)`, a_l = A_l(F_l)
   resized to h x w, A_l = 3x3 conv-BN-ReLU-1x1 conv -> K, p̄ = softmax(z_S) (or z_T) detached.
4. `L_H = CE(H(F_T), y)` over P (H only: F_T detached), H = 3x3 conv C_T->128-BN-ReLU-1x1 -> K;
   `L_shared = τ² · mean_i KL(softmax(H(F_T)/τ) ‖ softmax(H(φ(F_S))/τ))` over all h·w pixels, with H's
   parameters detached (torch.func.functional_call) and H(F_T) detached, so H learns from L_H only.
5. `L_kl` = the KD term (kd.py) at τ = kl_tau, from iteration `kl_start` on (None: iteration 1000, or
   5 % of a wall-clock budget).
6. `L = L_task + λ_fea L_fea + λ_aux L_aux + λ_H (L_H + L_shared) + λ_kl L_kl`; with `self_normalize`,
   L_task and L_fea are each divided by their detached value (`L / sg(L)`: value 1, gradient ∇L / L).
   `normalize` names the normalised terms explicitly among task, fea, kl and kd (the KD method's term
   in `lfd+kd`); the authors' released script runs `method=lfd+kd` with `normalize=[task,kd,fea]`.
   The task and kd terms are owned by the combined objective (train/losses/__init__.py), which reads
   `normalize_task` and `normalize_terms`.

Terms: `fea`, `aux`, `shared_H`, `shared`, `kl` (weighted; `kl` is 0 before kl_start).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from runtime.errors import UserError
from runtime.metadata import IGNORE_INDEX
from train.config import DistillConfig, LFDConfig
from train.losses.base import (
    DEEP,
    BuildContext,
    DistillMethod,
    conv1x1,
    downsample_labels,
    feature,
    head,
    pixel_kl,
    resize,
    teacher_logits,
    zero,
)
from train.losses.objective import StepInfo, teacher_output
from train.models.output import SegOutput, stage

# d per pixel for each `mask` (LFDConfig.mask; its choices are checked once, by train.config.validate)
MASKS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": lambda log_pt, log_ps: pixel_kl(log_pt, log_ps),
    "entropy": lambda log_pt, log_ps: -(log_pt.exp() * log_pt).sum(1),
    "uniform": lambda log_pt, log_ps: torch.ones_like(log_pt[:, 0]),
}
DEFAULT_KL_START_ITERS = 1000
DEFAULT_KL_START_FRACTION = 0.05
_EPS = 1e-12


def logit_mask(log_pt: torch.Tensor, log_ps: torch.Tensor, valid: torch.Tensor, beta: float,
               kind: str = "kl") -> torch.Tensor:
    """B x h x w mask m: `(1 − β) + β · d / mean_P d` per image on valid pixels, 0 on ignored ones.

    `log_pt`, `log_ps`: B x K x h x w log-probabilities (detached); `valid`: B x h x w bool.
    An image whose d is 0 everywhere on P gets m = 1 on P.
    """
    d = MASKS[kind](log_pt, log_ps)
    v = valid.to(d.dtype)
    mean_d = (d * v).sum((1, 2)) / v.sum((1, 2)).clamp_min(1)
    ratio = torch.where(mean_d[:, None, None] > _EPS, d / mean_d.clamp_min(_EPS)[:, None, None],
                        torch.ones_like(d))
    return ((1 - beta) + beta * ratio) * v


def standardize(f: torch.Tensor) -> torch.Tensor:
    """ν(F): per-channel standardisation over (B, h, w), no affine (biased variance, eps 1e-5)."""
    return F.batch_norm(f.float(), None, None, training=True, momentum=0.0, eps=1e-5)


def masked_feature_loss(f_s_adapted: torch.Tensor, f_t: torch.Tensor, mask: torch.Tensor,
                        num_valid: torch.Tensor | float | None = None) -> torch.Tensor:
    """`Σ_{b,i} m_i ‖ν(φ(F_S))_i − ν(F_T)_i‖² / (C_T · |P|)`; |P| = `num_valid`, default Σ m."""
    diff = (standardize(f_s_adapted) - standardize(f_t)).pow(2).sum(1)
    denom = mask.sum() if num_valid is None else num_valid
    return (mask * diff).sum() / (f_t.shape[1] * torch.as_tensor(denom).clamp_min(1))


def class_weights(pt: torch.Tensor, ps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """B x K weights `w_k = K c_k / Σ_j c_j`, `c_k = mean_{i∈P} |p_T,k,i − p_S,k,i|` (1 if Σ c = 0)."""
    v = valid[:, None].to(pt.dtype)
    c = ((pt - ps).abs() * v).sum((2, 3)) / v.sum((2, 3)).clamp_min(1)
    total = c.sum(1, keepdim=True)
    k = pt.shape[1]
    return torch.where(total > _EPS, k * c / total.clamp_min(_EPS), torch.ones_like(c))


def aux_head_loss(aux_logits: torch.Tensor, log_target: torch.Tensor, weights: torch.Tensor,
                  valid: torch.Tensor, num_valid: torch.Tensor) -> torch.Tensor:
    """`(1/|P|) Σ_{i∈P} Σ_k w_k p̄_k,i (log p̄_k,i − log softmax(a)_k,i)` for one head (a at h x w)."""
    log_q = F.log_softmax(aux_logits.float(), 1)
    per_pixel = (weights[:, :, None, None] * log_target.exp() * (log_target - log_q)).sum(1)
    return (per_pixel * valid).sum() / num_valid.clamp_min(1)


def shared_kl(h_t: torch.Tensor, h_s: torch.Tensor, tau: float) -> torch.Tensor:
    """`τ² · mean_i KL(softmax(h_t/τ) ‖ softmax(h_s/τ))` over all pixels (h_t is the detached target)."""
    return tau**2 * pixel_kl(F.log_softmax(h_t.detach().float() / tau, 1),
                             F.log_softmax(h_s.float() / tau, 1)).mean()


def normalized_terms(cfg: LFDConfig) -> list[str]:
    """The terms divided by their own detached value: `normalize`, or [task, fea] with `self_normalize`."""
    if cfg.normalize is not None:
        return list(cfg.normalize)
    return ["task", "fea"] if cfg.self_normalize else []


class LFD(DistillMethod):
    """The LFD distillation terms (the task term is added, and normalised, by the combined objective)."""

    label_terms = ("shared_H",)  # H learns from labels only: frames leave it alone rather than dilute it

    def __init__(self, cfg: LFDConfig, student_channels: dict[str, int], teacher_channels: dict[str, int],
                 num_classes: int, budget_is_time: bool = False, ignore_index: int = IGNORE_INDEX) -> None:
        """`student_channels` / `teacher_channels`: stage name -> width for `decoder`, every stage of
        `cfg.aux_stages` (student) and of `cfg.extra_pairs`."""
        super().__init__()
        self.cfg = cfg
        self.last_raw: dict[str, torch.Tensor] = {}
        self.normalize_terms = set(normalized_terms(cfg))
        self.normalize_task = "task" in self.normalize_terms
        self.budget_is_time = budget_is_time
        self.ignore_index = ignore_index
        ct = teacher_channels[DEEP]
        self.phi = conv1x1(student_channels[DEEP], ct, bn=True)
        self.extra_pairs = [(str(a), str(b)) for a, b in cfg.extra_pairs]
        self.extra_phi = nn.ModuleList(
            conv1x1(student_channels[a], teacher_channels[b], bn=True) for a, b in self.extra_pairs)
        self.aux_stages = list(cfg.aux_stages)
        self.aux_heads = nn.ModuleDict(
            {name: head(student_channels[name], cfg.aux_channels, num_classes) for name in self.aux_stages})
        self.shared_head = head(ct, cfg.shared_channels, num_classes)

    @classmethod
    def from_config(cls, ctx: BuildContext) -> LFD:
        c = ctx.cfg.lfd
        for pair in c.extra_pairs:
            if len(pair) != 2:
                raise UserError(f"distill.lfd.extra_pairs entry {pair!r} must be [student_stage, teacher_stage]")
        s_names = [DEEP, *c.aux_stages, *(p[0] for p in c.extra_pairs)]
        t_names = [DEEP, *(p[1] for p in c.extra_pairs)]
        s_ch = {n: stage(ctx.student_info, n, "student", "lfd").channels for n in s_names}
        t_ch = {n: stage(ctx.teacher, n, "teacher", "lfd").channels for n in t_names}
        return cls(c, s_ch, t_ch, ctx.num_classes, ctx.budget_is_time)

    @classmethod
    def teacher_reads(cls, cfg: DistillConfig) -> list[str]:
        return list(dict.fromkeys(["logits", DEEP, *(str(p[1]) for p in cfg.lfd.extra_pairs if len(p) == 2)]))

    def kl_active(self, step: StepInfo) -> bool:
        """KD from `kl_start` on; default iteration 1000, or 5 % of a wall-clock budget."""
        if self.cfg.kl_start is not None:
            return step.iteration >= self.cfg.kl_start
        if step.is_time_budget:
            return step.progress >= DEFAULT_KL_START_FRACTION
        return step.iteration >= DEFAULT_KL_START_ITERS

    def extra_repr(self) -> str:
        c = self.cfg
        start = (f"iteration {c.kl_start}" if c.kl_start is not None else
                 f"{DEFAULT_KL_START_FRACTION:.0%} of the budget" if self.budget_is_time else
                 f"iteration {DEFAULT_KL_START_ITERS}")
        return f"mask={c.mask}, beta={c.beta}, aux_target={c.aux_target}, kl from {start}"

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        c = self.cfg
        t = teacher_output(t)
        z_s = s.logits.float()
        z_t = teacher_logits(s, t)
        size = z_s.shape[-2:]
        # unlabeled frames (labels None): every pixel is distilled, and the shared head H has no labels
        y = downsample_labels(labels, size) if labels is not None else None
        valid = y != self.ignore_index if y is not None else torch.ones_like(z_s[:, 0], dtype=torch.bool)
        num_valid = valid.sum()

        # One log-softmax per (model, τ), shared by the mask, the class weights, L_aux and L_kl.
        cache: dict[tuple[str, float], torch.Tensor] = {}

        def log_p(who: str, tau: float) -> torch.Tensor:
            if (who, tau) not in cache:
                cache[(who, tau)] = F.log_softmax((z_s if who == "s" else z_t) / tau, 1)
            return cache[(who, tau)]

        # (entries are built outside no_grad so that L_kl can reuse the student's with its graph)
        ls_mask = log_p("s", c.tau).detach()
        with torch.no_grad():
            mask = logit_mask(log_p("t", c.tau), ls_mask, valid, c.beta, c.mask)

        # 2. masked feature distillation
        f_s = feature(s, DEEP, "student")
        g = self.phi(f_s)
        f_t = resize(feature(t, DEEP, "teacher").detach(), g.shape[-2:])
        if tuple(g.shape[-2:]) == tuple(size):
            fea = masked_feature_loss(g, f_t, mask, num_valid)
        else:
            fea = masked_feature_loss(g, f_t, resize(mask[:, None], g.shape[-2:])[:, 0])
        for (sn, tn), phi in zip(self.extra_pairs, self.extra_phi):
            ge = phi(feature(s, sn, "student"))
            fe = resize(feature(t, tn, "teacher").detach(), ge.shape[-2:])
            fea = fea + masked_feature_loss(ge, fe, resize(mask[:, None], ge.shape[-2:])[:, 0])
        self.last_raw = {"fea": fea.detach()}  # for logs: the value before self-normalisation
        if "fea" in self.normalize_terms:
            fea = fea / fea.detach().clamp_min(_EPS)

        # 3. class-masked shallow auxiliary heads
        aux = zero(z_s)
        if self.aux_stages:
            lt1, ls1 = log_p("t", 1.0), log_p("s", 1.0).detach()
            with torch.no_grad():
                weights = class_weights(lt1.exp(), ls1.exp(), valid)
                log_target = lt1 if c.aux_target == "teacher" else ls1
            for name, a_head in self.aux_heads.items():
                a = resize(a_head(feature(s, name, "student")), size)
                aux = aux + aux_head_loss(a, log_target, weights, valid, num_valid)

        # 4. shared auxiliary head: H learns from L_H; the student is pulled through a detached H
        h_t = resize(self.shared_head(f_t), size).float()
        shared_h = (F.cross_entropy(h_t, y, ignore_index=self.ignore_index, reduction="sum") / num_valid.clamp_min(1)
                    if y is not None else zero(z_s))
        params = {k: v.detach() for k, v in self.shared_head.named_parameters()}
        buffers = {k: v.clone() for k, v in self.shared_head.named_buffers()}  # keep H's BN stats its own
        h_s = resize(functional_call(self.shared_head, (params, buffers), (g,)), size)
        shared = shared_kl(h_t, h_s, c.shared_tau)

        # 5. logit KD after the warm-up
        if self.kl_active(step):
            kl = c.kl_tau**2 * pixel_kl(log_p("t", c.kl_tau), log_p("s", c.kl_tau)).mean()
            if "kl" in self.normalize_terms:
                self.last_raw["kl"] = kl.detach()
                kl = kl / kl.detach().clamp_min(_EPS)
        else:
            kl = zero(z_s)

        return {
            "fea": c.w_fea * fea,
            "aux": c.w_aux * aux,
            "shared_H": c.w_shared * shared_h,
            "shared": c.w_shared * shared,
            "kl": c.w_kl * kl,
        }

