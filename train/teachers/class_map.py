"""Mapping a teacher's classes onto the student's (docs/distillation.md, "Use your own teacher").

A teacher trained elsewhere rarely predicts the student's label set. Each student class k gets a group
G_k of teacher classes (by name, or by `distill.class_map`); teacher classes in no group are "other".

1. Mapped logits: `z̃_k = log Σ_{j∈G_k} exp z_j` (log-sum-exp of the teacher's logits over G_k).
2. `softmax(z̃)_k = Σ_{j∈G_k} e^{z_j} / Σ_{k'} Σ_{j∈G_k'} e^{z_j} = Σ_{j∈G_k} p_j / Σ_{j∈∪G} p_j`, p = softmax(z):
   the teacher's probability mass summed over each group, renormalised over the mapped groups ("other"
   is dropped, so a pixel the teacher calls "other" still gets a distribution over the student's classes).
3. KD at temperature τ uses `softmax(z̃/τ)`: the group masses of (2) raised to 1/τ and renormalised (the
   temperature acts on the mapped distribution, not on each teacher class before summing).
4. `argmax_k z̃_k` = the group of largest mass (log is monotone): the mapped pseudo-label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.errors import UserError

UNNAMED = re.compile(r"class\d+")  # the names a teacher without class names gets: never matched by name
FORMAT_HINT = ("map them with distill.class_map=FILE.yaml, a YAML mapping of student class to a list of teacher "
               "class names or ids (e.g. `vehicle: [car, truck]`); student classes it does not list map by name")


def canonical(name: str) -> str:
    """The form names are compared in: lower case without spaces, underscores or hyphens
    ("Traffic Light" == "traffic_light" == "traffic-light")."""
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def show(names: Sequence[str], limit: int = 12) -> str:
    """'a, b, c' or 'a, b, ..., (40 in all)' for messages."""
    names = [str(n) for n in names]
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


@dataclass
class ClassMap:
    """Student class k <- teacher classes `groups[k]` (indices into `teacher`), disjoint across k."""

    student: list[str]
    teacher: list[str]
    groups: list[list[int]]

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """N x Kt x h x w teacher logits -> N x Ks x h x w, `z̃_k = logsumexp_{j∈groups[k]} z_j` (1 in the
        module docstring). One-class groups are a plain channel selection."""
        if z.shape[1] != len(self.teacher):
            raise UserError(f"the teacher's logits have {z.shape[1]} channels but its class map names "
                            f"{len(self.teacher)} teacher classes; rebuild the map from the teacher's classes")
        if all(len(g) == 1 for g in self.groups):
            return z[:, torch.tensor([g[0] for g in self.groups], device=z.device)]
        return torch.stack([z[:, g[0]] if len(g) == 1 else
                            z[:, torch.tensor(g, device=z.device)].logsumexp(1) for g in self.groups], 1)

    def is_identity(self) -> bool:
        """True when student class k is exactly teacher class k for all k (nothing to map)."""
        return len(self.student) == len(self.teacher) and self.groups == [[k] for k in range(len(self.teacher))]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for a cache manifest): student, teacher and groups as plain lists."""
        return {"student": list(self.student), "teacher": list(self.teacher),
                "groups": [list(map(int, g)) for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassMap:
        return cls([str(s) for s in d["student"]], [str(t) for t in d["teacher"]],
                   [[int(j) for j in g] for g in d["groups"]])


def read_spec(spec: str | Path | Mapping[str, Any]) -> dict[str, list[Any]]:
    """`distill.class_map` as `{student class: [teacher names or ids]}`: a mapping, or a YAML file holding one
    (a single name or id may stand for a one-item list)."""
    where = "distill.class_map"
    if not isinstance(spec, Mapping):
        import yaml

        path = Path(spec)
        where = str(path)
        if not path.is_file():
            raise UserError(f"the class map file {path} (distill.class_map) does not exist; check the path, or write "
                            f"it as `student class: [teacher classes or ids]` lines (e.g. `vehicle: [car, truck]`)")
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"the class map file {path} is not valid YAML ({str(e).splitlines()[0]}); "
                            f"write it as `student class: [teacher classes]` lines") from e
        if not isinstance(spec, Mapping):
            raise UserError(f"the class map file {path} holds a {type(spec).__name__}, not a mapping; write it as "
                            f"`student class: [teacher classes]` lines (e.g. `vehicle: [car, truck]`)")
    out: dict[str, list[Any]] = {}
    for key, value in spec.items():
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in items if isinstance(v, bool) or not isinstance(v, (str, int))]
        if bad or not items:
            raise UserError(f"{where}: student class '{key}' maps to {value!r}; give a list of teacher class "
                            f"names or integer ids (e.g. `{key}: [car, truck]`)")
        out[str(key)] = items
    return out


def _teacher_index(item: str | int, teacher: Sequence[str], where: str, student_class: str) -> int:
    """The teacher class an entry of the map names (an integer id, or a name compared canonically)."""
    if isinstance(item, int):
        if not 0 <= item < len(teacher):
            raise UserError(f"{where}: student class '{student_class}' lists teacher class id {item}, but the "
                            f"teacher's ids are 0..{len(teacher) - 1}; use one of them or a name ({show(teacher)})")
        return item
    hits = [j for j, t in enumerate(teacher) if canonical(t) == canonical(item)]
    if not hits:
        raise UserError(f"{where}: student class '{student_class}' lists '{item}', which is not a teacher class; "
                        f"the teacher's classes are {show(teacher)}")
    return hits[0]


def class_map(student: Sequence[str], teacher: Sequence[str], spec: str | Path | Mapping[str, Any] | None = None,
              who: str = "the teacher") -> ClassMap | None:
    """How the teacher's classes map onto the student's, or None when they are the same list (no mapping).

    `spec` (`distill.class_map`): None -> by name (`canonical` names; a teacher without class names,
    "class0".., matches nothing by name); a mapping or YAML file `{student class: [teacher names or ids]}`,
    student classes it does not list map by name. UserError, in one sentence: student classes that get no
    teacher class (listing them and the teacher's classes), a teacher class in two groups, an unknown name
    or id in the map. A map that turns out to be the identity gives None too.
    """
    student, teacher = [str(s) for s in student], [str(t) for t in teacher]
    if spec is None and student == teacher:
        return None
    where = "distill.class_map" if spec is None or isinstance(spec, Mapping) else str(spec)
    given = read_spec(spec) if spec is not None else {}
    by_canon = {canonical(s): k for k, s in enumerate(student)}
    listed: dict[int, list[Any]] = {}
    for key, items in given.items():
        k = by_canon.get(canonical(key))
        if k is None:
            raise UserError(f"{where} maps '{key}', which is not a student class; the student's classes are "
                            f"{show(student)}")
        listed[k] = items
    named = not all(UNNAMED.fullmatch(t) for t in teacher)
    groups: list[list[int]] = []
    for k, s in enumerate(student):
        if k in listed:
            groups.append([_teacher_index(item, teacher, where, s) for item in listed[k]])
        else:
            groups.append([j for j, t in enumerate(teacher) if named and canonical(t) == canonical(s)])
    owner: dict[int, int] = {}
    for k, g in enumerate(groups):
        for j in g:
            if j in owner:
                both = sorted({student[owner[j]], student[k]})
                twice = f"twice for student class '{both[0]}'" if len(both) == 1 else \
                    f"for both student classes '{both[0]}' and '{both[1]}'"
                raise UserError(f"{where}: teacher class '{teacher[j]}' is listed {twice}; give each teacher "
                                f"class to at most one student class")
            owner[j] = k
    missing = [s for s, g in zip(student, groups) if not g]
    if missing:
        why = (f"the classes of {who} have no names ({show(teacher, 4)}), so none matches by name" if not named
               else f"the classes of {who} are {show(teacher)}")
        one = "class gets" if len(missing) == 1 else "classes get"
        raise UserError(f"the student {one} no teacher class: {show(missing)} ({why}); {FORMAT_HINT}")
    cmap = ClassMap(student, teacher, groups)
    return None if cmap.is_identity() else cmap
