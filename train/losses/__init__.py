"""Training objectives: the task loss plus any distillation methods, composed from `distill.method`.

`METHODS` maps each method name to its class (docs/methods.md gives the math; each module restates it).
`build_objective(cfg.distill, student.feature_info, teacher.feature_info, num_classes, budget.is_time)`
parses `method` ('baseline', 'kd', 'kd+cwd', 'lfd', 'fkd+kd', ...) and returns one `Combined` objective:
the task loss (`ce`, `aux_ce`) and every method's named terms, with needs_teacher / detach_encoder set
from its parts. LFD with `self_normalize` turns the task terms into one term `task` = L_task / L_task
(detached); the raw values stay readable in `Combined.last_raw` for logging.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from runtime.errors import UserError
from train.config import DistillConfig
from train.losses.at import AT
from train.losses.base import BuildContext, DistillMethod, teacher_logits
from train.losses.cwd import CWD
from train.losses.fitnet import FitNet
from train.losses.fkd import FKD
from train.losses.kd import KD
from train.losses.lfd import LFD
from train.losses.objective import Objective, StepInfo, check_teacher_classes, require_teacher
from train.losses.pseudo import pseudo_label_loss
from train.losses.task import TaskLoss
from train.models.output import FeatureInfo, SegOutput, describe_stages

METHODS: dict[str, type[DistillMethod]] = {"kd": KD, "cwd": CWD, "fitnet": FitNet, "at": AT, "lfd": LFD, "fkd": FKD}
BASELINE = "baseline"


class Combined(Objective):
    """Task loss + distillation terms. Term names come from the parts; a clash is prefixed `method.`.

    With a transfer set (`step.labeled` = n < B, the batch's first n samples labeled, the other u = B − n
    unlabeled frames), the task loss sees the labeled samples only and each method is called on each part
    (with `labels=None` for the frames); a method term is the sample-weighted mean of its two parts,

        L_m = (n · L_m(labeled) + u · L_m(unlabeled)) / (n + u),

    i.e. the mean over all B samples for the per-pixel means the methods compute (a term that needs labels,
    a method's `label_terms` such as LFD's shared-head CE, keeps its labeled part's value), and the optional
    pseudo-label term (train/losses/pseudo.py) is added on the frames. Each part's value is kept in
    `last_parts` (`labeled.<term>`, `unlabeled.<term>`) for the log. Adapters with BatchNorm see each
    part as its own batch."""

    def __init__(self, task: Objective, methods: dict[str, DistillMethod],
                 pseudo: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.task = task
        self.methods = nn.ModuleDict(methods)
        self.pseudo = pseudo  # (threshold, weight) of hard pseudo-labels on unlabeled frames, or None
        self.needs_teacher = task.needs_teacher or any(m.needs_teacher for m in methods.values())
        self.detach_encoder = task.detach_encoder or any(m.detach_encoder for m in methods.values())
        self.normalize_task = any(getattr(m, "normalize_task", False) for m in methods.values())
        # terms of one method normalised at another's request (LFD's normalize=[kd] in lfd+kd)
        self.normalize_others = {n for name, m in methods.items() for n in getattr(m, "normalize_terms", ())
                                 if n not in ("task", "fea", "kl")}
        self.last_raw: dict[str, torch.Tensor] = {}  # detached un-normalised values, for logs only
        self.last_parts: dict[str, torch.Tensor] = {}  # with a transfer set: each term per part, for logs only

    @property
    def method(self) -> str:
        return "+".join(self.methods) or BASELINE

    def forward(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo
                ) -> dict[str, torch.Tensor]:
        assert labels is not None, "the combined objective needs the batch's labels (255 for unlabeled frames)"
        batch, n = int(labels.shape[0]), step.labeled
        self.last_raw, self.last_parts = {}, {}
        if n is None or n >= batch:
            terms = self._task_terms(s, t, labels, step)
            terms.update(self._method_terms(s, t, labels, step, set(terms)))
            return self._normalize_others(terms)
        if n < 1:
            raise ValueError(f"a batch needs at least one labeled sample (step.labeled={n})")
        if not self.methods:
            raise UserError("unlabeled frames (data.unlabeled) were given to the student alone (method=baseline), "
                            "which has no teacher to learn them from; use a distillation method or drop "
                            "data.unlabeled")
        u = batch - n
        lab, unl = slice(0, n), slice(n, batch)
        terms = self._task_terms(part(s, lab), part(t, lab), labels[lab], step)
        on_labeled = self._method_terms(part(s, lab), part(t, lab), labels[lab], step, set(terms))
        raw = dict(self.last_raw)
        on_frames = self._method_terms(part(s, unl), part(t, unl), None, step, set(terms))
        raw_frames, self.last_raw = self.last_raw, raw
        label_only = {f"{name}.{t}" if f"{name}.{t}" in on_labeled else t
                      for name, m in self.methods.items() for t in getattr(m, "label_terms", ())}
        for k, v in on_labeled.items():
            terms[k] = v if k in label_only else (n * v + u * on_frames[k]) / (n + u)
            # a self-normalised term's parts are logged before normalisation (its value is always 1)
            self.last_parts[f"labeled.{k}"] = raw.get(k, v).detach()
            self.last_parts[f"unlabeled.{k}"] = raw_frames.get(k, on_frames[k]).detach()
        if self.pseudo is not None:
            threshold, weight = self.pseudo
            s_u = part(s, unl)
            loss, kept = pseudo_label_loss(s_u.logits, teacher_logits(s_u, part(t, unl)), threshold)
            terms["pseudo"] = weight * loss
            self.last_parts["unlabeled.pseudo_kept"] = kept
        return self._normalize_others(terms)

    def _task_terms(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor, step: StepInfo
                    ) -> dict[str, torch.Tensor]:
        terms = self.task(s, t, labels, step)
        if self.normalize_task:
            total = torch.stack([v.float() for v in terms.values()]).sum()
            self.last_raw["task"] = total.detach()
            terms = {"task": total / total.detach().clamp_min(1e-12)}
        return terms

    def _method_terms(self, s: SegOutput, t: SegOutput | None, labels: torch.Tensor | None, step: StepInfo,
                      taken: set[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, m in self.methods.items():
            for key, value in m(s, t, labels, step).items():
                out[f"{name}.{key}" if key in taken or key in out else key] = value
            self.last_raw.update(getattr(m, "last_raw", {}))
        return out

    def _normalize_others(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.normalize_others & set(terms):
            self.last_raw[name] = terms[name].detach()
            terms[name] = terms[name] / terms[name].detach().clamp_min(1e-12)
        return terms


def part(out: SegOutput | None, rows: slice) -> SegOutput | None:
    """The samples `rows` of a model output (logits, aux and every feature sliced along the batch)."""
    if out is None:
        return None
    return SegOutput(logits=out.logits[rows], aux=None if out.aux is None else out.aux[rows],
                     features={k: v[rows] for k, v in out.features.items()})


def parse_method(method: str) -> list[str]:
    """'kd+cwd' -> ['kd', 'cwd']; 'baseline' -> []. Unknown names raise a UserError with a hint."""
    names = [n.strip().lower() for n in str(method).split("+")]
    valid = [BASELINE, *METHODS]
    out: list[str] = []
    for n in names:
        if n not in valid:
            close = difflib.get_close_matches(n, valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(f"unknown distillation method '{n or method}' in method='{method}'; choose from "
                            f"{', '.join(valid)}, combined with '+' (e.g. kd+cwd).{hint}")
        if n == BASELINE:
            continue
        if n in out:
            raise UserError(f"method='{method}' names '{n}' twice; give each method once")
        out.append(n)
    return out


def needs_teacher(method: str) -> bool:
    """Whether `method` (e.g. 'kd+cwd') has a part that reads the teacher (UserError for unknown names)."""
    return any(METHODS[n].needs_teacher for n in parse_method(method))


def teacher_reads(cfg: DistillConfig) -> list[str]:
    """The teacher outputs `cfg.method` reads (`logits`, feature names): what a teacher cache must hold
    (pseudo-labels read the logits)."""
    reads = [o for n in parse_method(cfg.method) for o in METHODS[n].teacher_reads(cfg)]
    return list(dict.fromkeys(reads + (["logits"] if cfg.pseudo_labels and reads else [])))


def build_objective(cfg: DistillConfig, student_info: list[FeatureInfo], teacher_info: list[FeatureInfo] | None,
                    num_classes: int, budget_is_time: bool, teacher_num_classes: int | None = None) -> Combined:
    """The objective for `cfg.method`; its parameters (adapters, heads) are the training-only modules.

    Raises UserError for an unknown method, a feature stage that a model does not have (listing the
    available stages, widths and strides), a method that needs a teacher without one, or a teacher
    whose class count differs from the student's.
    """
    names = parse_method(cfg.method)
    if needs_teacher(cfg.method):
        require_teacher(cfg.method, teacher_info is not None)
        if teacher_num_classes is not None:
            check_teacher_classes(teacher_num_classes, num_classes)
    if not student_info:
        raise UserError("the student model reports no feature stages; its recipe must set feature_info")
    ctx = BuildContext(cfg, student_info, teacher_info, num_classes, budget_is_time)
    methods = {n: METHODS[n].from_config(ctx) for n in names}
    if cfg.pseudo_labels and not methods:
        raise UserError("distill.pseudo_labels=true takes the labels from a teacher, which method=baseline has "
                        "none of; use a distillation method (e.g. method=kd)")
    return Combined(TaskLoss(), methods, (cfg.pseudo_threshold, cfg.pseudo_weight) if cfg.pseudo_labels else None)


__all__ = ["METHODS", "Combined", "build_objective", "describe_stages", "needs_teacher", "parse_method", "TaskLoss",
           "teacher_reads"]
