"""Foreign PyTorch teachers: segmentation models trained elsewhere (docs/distillation.md, "Use your own teacher").

    hf:DIR                   a transformers model saved with `save_pretrained` (SegFormer, UperNet, DPT, BEiT, ...:
                             AutoModelForSemanticSegmentation; Mask2Former, MaskFormer, OneFormer:
                             AutoModelForUniversalSegmentation, turned into per-pixel class logits)
    torchvision:NAME:WEIGHTS a torchvision deeplabv3/fcn/lraspp builder and a local state dict
    smp:DIR                  a segmentation-models-pytorch model saved with its `save_pretrained`

Everything loads offline (`local_files_only`; no encoder or backbone weights are fetched). Each source gives
`(model, run, preprocess, teacher classes)`; `ForeignTeacher` wraps them into what our own teachers are:
a module whose forward takes the student's input and returns a SegOutput (logits at the teacher's own
stride, mapped to the student's classes; named layers as features through forward hooks).
transformers and segmentation-models-pytorch are imported where used: `pip install -e '.[teachers]'`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from runtime.errors import MissingDependency, UserError
from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD
from train.losses.base import DEEP
from train.models.output import FeatureInfo, SegOutput
from train.teachers.class_map import ClassMap, class_map

PROBE_SIZE = (128, 256)  # the dummy forward that finds strides and channels: divisible by 32
INSTALL = "pip install -e '.[teachers]'"
Run = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class TeacherPreprocess:
    """How the teacher expects its input: `(x01 − mean) / std` on pixel values x01 in [0, 1], RGB."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: tuple[int, int] | None = None  # its processor's resize target, recorded only (the teacher runs on the student's crop)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "size": list(self.size) if self.size else None}


IMAGENET = TeacherPreprocess(IMAGENET_MEAN, IMAGENET_STD)


def _import(name: str, kind: str) -> ModuleType:
    """Import `name` or raise MissingDependency with the install hint of the [teachers] extra."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingDependency(f"{name.split('.')[0]} is not installed (needed for {kind}: teachers): {INSTALL}") from e


def _probe(model: nn.Module, run: Run, x: torch.Tensor, names: Sequence[str]
           ) -> tuple[torch.Tensor, dict[str, list[Any]]]:
    """Run once with forward hooks on `names`: (logits, name -> the outputs each call of that module gave)."""
    modules = dict(model.named_modules())
    seen: dict[str, list[Any]] = {n: [] for n in names}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen[n].append(o)) for n in names]
    try:
        with torch.no_grad():
            z = run(model, x)
    finally:
        for h in hooks:
            h.remove()
    return z, seen


def _is_map(outputs: list[Any]) -> bool:
    return len(outputs) == 1 and isinstance(outputs[0], torch.Tensor) and outputs[0].dim() == 4


def _what(outputs: list[Any]) -> str:
    """What a hooked module gave, for messages."""
    if not outputs:
        return "does not run in the teacher's forward (an unused or auxiliary head?)"
    if len(outputs) > 1:
        return f"runs {len(outputs)} times per forward (a shared module)"
    o = outputs[0]
    if isinstance(o, torch.Tensor):
        return f"outputs a {o.dim()}-D tensor ({' x '.join(map(str, o.shape))}), not an N x C x h x w map"
    return f"outputs a {type(o).__name__}, not an N x C x h x w tensor"


class ForeignTeacher(nn.Module):
    """A segmentation model trained elsewhere as a teacher.

    forward(x): x is the STUDENT's input (normalised with the student's mean/std, N x 3 x H x W); it is
    converted to the teacher's normalisation (`x01 = x · std_s + mean_s`; `x_t = (x01 − mean_t) / std_t`),
    the model runs, and the result is a SegOutput with logits mapped to the student's classes
    (`ClassMap.apply`, when a map is needed) at the model's own output stride (not upsampled: the losses
    resize them to the student's logit size), and `features` = the outputs of the named `layers` (forward
    hooks; each must run once per forward and give N x C x h x w). `stride` and `feature_info` (channels and
    reduction of each layer) come from one dummy forward at PROBE_SIZE. The wrapped model stays in eval mode.
    """

    mean_s: torch.Tensor  # 1 x 3 x 1 x 1 buffers: the student's and the teacher's mean/std
    std_s: torch.Tensor
    mean_t: torch.Tensor
    std_t: torch.Tensor

    def __init__(self, model: nn.Module, run: Run, preprocess: TeacherPreprocess, student_mean: Sequence[float],
                 student_std: Sequence[float], class_map: ClassMap | None, teacher_classes: Sequence[str],
                 layers: Sequence[str] = (), kind: str = "", source: str = "") -> None:
        super().__init__()
        self.model = model.eval()
        self.run = run
        self.preprocess, self.class_map = preprocess, class_map
        self.teacher_classes = [str(c) for c in teacher_classes]
        self.kind, self.source = kind, source
        self._who = f"the teacher {source}" if source else "the teacher"
        self.layers = list(dict.fromkeys(layers))
        self.num_classes = len(class_map.student) if class_map is not None else len(self.teacher_classes)
        for name, values in (("mean_s", student_mean), ("std_s", student_std),
                             ("mean_t", preprocess.mean), ("std_t", preprocess.std)):
            self.register_buffer(name, torch.tensor([float(v) for v in values]).view(1, 3, 1, 1), persistent=False)
        self._check_layers()
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        z, seen = _probe(self.model, self.run, self.teacher_input(torch.zeros(1, 3, *PROBE_SIZE, device=device)),
                         self.layers)
        if z.dim() != 4 or z.shape[1] != len(self.teacher_classes):
            raise UserError(f"{self._who} gives logits of shape {tuple(z.shape)} but names {len(self.teacher_classes)} "
                            f"classes; its saved config and weights disagree: save the model again")
        bad = [f"'{n}' {_what(o)}" for n, o in seen.items() if not _is_map(o)]
        if bad:
            raise UserError(f"layer {bad[0]} in {self._who}; name layers that run once with a 4-D output "
                            f"(e.g. {self._some_layers()})")
        self.stride = max(1, round(PROBE_SIZE[0] / z.shape[-2]))
        self.feature_info = [FeatureInfo(n, int(o[0].shape[1]), max(1, round(PROBE_SIZE[0] / o[0].shape[-2])))
                             for n, o in seen.items()]
        # the first named layer is also the teacher's deep feature `decoder` (train/losses/base.py DEEP), which
        # LFD, FitNet and CWD's feature term read from any teacher
        if self.layers and DEEP not in self.layers:
            first = self.feature_info[0]
            self.feature_info.append(FeatureInfo(DEEP, first.channels, first.reduction))
        self._seen: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        self._hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: self._seen.__setitem__(n, o))
                       for n in self.layers]

    def _check_layers(self) -> None:
        modules = dict(self.model.named_modules())
        unknown = [n for n in self.layers if not n or n not in modules]
        if unknown:
            raise UserError(f"{self._who} has no layer {', '.join(repr(n) for n in unknown)}; its layers with 4-D "
                            f"outputs include {self._some_layers()}")

    def _some_layers(self, n: int = 8) -> str:
        names = layer_names(self)
        picks = [names[round(i * (len(names) - 1) / (n - 1))] for i in range(n)] if len(names) > n else names
        return ", ".join(dict.fromkeys(picks)) + (f" ({len(names)} in all)" if len(names) > n else "")

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        """Student-normalised x -> the teacher's normalisation: `((x · std_s + mean_s) − mean_t) / std_t`."""
        x_t = ((x * self.std_s + self.mean_s) - self.mean_t) / self.std_t
        p = next(self.model.parameters(), None)
        return x_t.to(p.dtype) if p is not None and p.is_floating_point() and p.dtype != x_t.dtype else x_t

    def train(self, mode: bool = True) -> ForeignTeacher:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> SegOutput:
        self._seen.clear()
        z = self.run(self.model, self.teacher_input(x))
        missing = [n for n in self.layers if n not in self._seen]
        if missing:
            raise UserError(f"layer '{missing[0]}' of {self._who} did not run on this input; name layers that "
                            f"always run")
        if self.class_map is not None:
            z = self.class_map.apply(z)
        features = {n: self._seen[n] for n in self.layers}
        if self.layers and DEEP not in features:
            features[DEEP] = features[self.layers[0]]
        self._seen = {}
        return SegOutput(logits=z, features=features)

    def to_dict(self) -> dict[str, Any]:
        """What a cache manifest records about the teacher (JSON-able)."""
        return {"kind": self.kind, "source": self.source, "teacher_classes": list(self.teacher_classes),
                "preprocess": self.preprocess.to_dict(), "stride": int(self.stride),
                "class_map": self.class_map.to_dict() if self.class_map is not None else None,
                "feature_info": [asdict(f) for f in self.feature_info]}


def layer_names(teacher: ForeignTeacher) -> list[str]:
    """The wrapped model's named modules that run once per forward with a 4-D output on the dummy forward:
    the layers `distill.teacher_layers` and train.fkd_layers can use."""
    names = [n for n, _ in teacher.model.named_modules() if n]
    device = teacher.mean_s.device
    _, seen = _probe(teacher.model, teacher.run, teacher.teacher_input(torch.zeros(1, 3, *PROBE_SIZE, device=device)),
                     names)
    return [n for n in names if _is_map(seen[n])]


# ----------------------------------------------------------------------------------------------
# Sources


def _folder(path: str, kind: str, needs: Sequence[Sequence[str]]) -> Path:
    """The saved-model folder of `kind:DIR`, with one file of each group in `needs`; else one sentence."""
    p = Path(path).expanduser()
    if not p.is_dir():
        what = "is a file, not a folder" if p.exists() else "does not exist"
        raise UserError(f"the {kind} teacher folder {p} {what}; give the folder the model was saved to with "
                        f"save_pretrained ({kind}:DIR)")
    for group in needs:
        if not any((p / f).is_file() for f in group):
            raise UserError(f"the {kind} teacher folder {p} has no {' or '.join(group)}; save the model there "
                            f"with save_pretrained")
    return p


def universal_logits(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former-style outputs -> per-pixel class logits, as transformers' semantic post-processing:
    `prob_k = Σ_q softmax(c_q)_k · sigmoid(m_q)` over the K real classes (the last, "no object", dropped),
    `logits = log(max(prob, 1e-8))`. class_logits N x Q x (K+1), mask_logits N x Q x h x w -> N x K x h x w."""
    classes = class_logits.float().softmax(-1)[..., :-1]
    prob = torch.einsum("nqk,nqhw->nkhw", classes, mask_logits.float().sigmoid())
    return prob.clamp_min(1e-8).log()


def hf_preprocess(folder: Path) -> TeacherPreprocess:
    """Mean/std (on [0, 1] pixels) and size from `preprocessor_config.json`; ImageNet's mean/std when absent.

    The processor computes `(v · r − mean) / std` on 0..255 pixels v (r = rescale_factor, 1 without
    do_rescale; mean 0, std 1 without do_normalize); with v = 255 · x01 that is `(x01 − mean/s) / (std/s)`,
    s = 255 · r."""
    f = folder / "preprocessor_config.json"
    if not f.is_file():
        return IMAGENET
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{f} is not readable JSON ({e}); save the image processor again") from e

    def three(v: Any) -> tuple[float, float, float]:
        v = [float(a) for a in (v if isinstance(v, (list, tuple)) else [v] * 3)]
        return (v[0], v[1], v[2])

    s = 255.0 * float(d.get("rescale_factor", 1 / 255)) if d.get("do_rescale", True) else 255.0
    mean, std = (three(d.get("image_mean", IMAGENET_MEAN)), three(d.get("image_std", IMAGENET_STD))) \
        if d.get("do_normalize", True) else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    size = d.get("size")
    if isinstance(size, Mapping):
        size = (int(size["height"]), int(size["width"])) if "height" in size and "width" in size else None
    elif isinstance(size, int):
        size = (size, size)
    else:
        size = None
    return TeacherPreprocess(three([m / s for m in mean]), three([v / s for v in std]), size)


def _hf_classes(config: Any) -> list[str]:
    """config.id2label ordered by id; transformers' placeholders LABEL_k become class{k} (no names)."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    names = [id2label[k] for k in sorted(id2label)]
    if all(n == f"LABEL_{k}" for k, n in enumerate(names)):
        names = [f"class{k}" for k in range(len(names))]
    return names


UNIVERSAL_TYPES = ("mask2former", "maskformer", "oneformer", "eomt")


def _hf_semantic(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x, return_dict=True).logits


def _hf_upernet(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """UperNet's decode head output: its forward would upsample it to the input size."""
    return model.decode_head(model.backbone(x).feature_maps)  # type: ignore[operator,union-attr]


def _hf_universal(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=x, return_dict=True)
    return universal_logits(out.class_queries_logits, out.masks_queries_logits)


def _oneformer_run(folder: Path, config: Any, transformers: ModuleType) -> Run:
    """OneFormer runs on a task: the tokens of "the task is semantic" from the tokenizer saved next to it
    (as OneFormerProcessor makes them: input ids x attention mask, padded to config.task_seq_len)."""
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):  # else transformers makes an empty one
        raise UserError(f"the OneFormer teacher in {folder} needs its tokenizer (tokenizer.json or vocab.json) saved "
                        f"next to it; save it with processor.save_pretrained(DIR)")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        t = tokenizer(["the task is semantic"], padding="max_length", truncation=True,
                      max_length=int(getattr(config, "task_seq_len", 77)))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"the OneFormer teacher in {folder} needs its tokenizer saved next to it ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); save it with processor.save_pretrained(DIR)") from e
    tokens = torch.tensor(t["input_ids"]) * torch.tensor(t["attention_mask"])

    def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(pixel_values=x, task_inputs=tokens.expand(x.shape[0], -1).to(x.device), return_dict=True)
        return universal_logits(out.class_queries_logits, out.masks_queries_logits)

    return run


def load_hf(path: str) -> tuple[nn.Module, Run, TeacherPreprocess, list[str]]:
    """`hf:DIR`: AutoModelForSemanticSegmentation (logits = outputs.logits at the model's stride; UperNet:
    its decode head before the upsampling) or, for universal models (config.architectures
    *ForUniversalSegmentation / *ForInstanceSegmentation, or a Mask2Former/MaskFormer/OneFormer model type),
    AutoModelForUniversalSegmentation with `universal_logits`. Classes from config.id2label; pre-processing
    from preprocessor_config.json (`hf_preprocess`; ImageNet's mean/std when the folder has none)."""
    folder = _folder(path, "hf", [["config.json"], ["model.safetensors", "model.safetensors.index.json",
                                                     "pytorch_model.bin", "pytorch_model.bin.index.json"]])
    transformers = _import("transformers", "hf")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{folder / 'config.json'} is not a config this transformers {transformers.__version__} "
                        f"can read ({str(e).splitlines()[0]}); upgrade transformers or save the model again") from e
    for c in (config, getattr(config, "backbone_config", None)):
        if c is not None and getattr(c, "use_pretrained_backbone", False):
            c.use_pretrained_backbone = False  # the saved weights hold the backbone: fetch nothing
    archs = list(getattr(config, "architectures", None) or [])
    universal = config.model_type in UNIVERSAL_TYPES or any(
        a.endswith(("ForUniversalSegmentation", "ForInstanceSegmentation")) for a in archs)
    auto = transformers.AutoModelForUniversalSegmentation if universal else \
        transformers.AutoModelForSemanticSegmentation
    try:
        model = auto.from_pretrained(folder, config=config, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        what = "universal" if universal else "semantic"
        raise UserError(f"transformers cannot load {folder} as a {what} segmentation model (model type "
                        f"{config.model_type}: {str(e).splitlines()[0]}); save a segmentation model with "
                        f"save_pretrained") from e
    run: Run = _hf_semantic
    if config.model_type == "oneformer":
        run = _oneformer_run(folder, config, transformers)
    elif universal:
        run = _hf_universal
    elif config.model_type == "upernet":
        run = _hf_upernet
    return model, run, hf_preprocess(folder), _hf_classes(config)


TORCHVISION_NAMES = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
                     "fcn_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3_large")


def _torchvision_builders() -> dict[str, Callable[..., nn.Module]]:
    """NAME -> torchvision.models.segmentation builder (imported here, where used)."""
    seg = importlib.import_module("torchvision.models.segmentation")
    return {name: getattr(seg, name) for name in TORCHVISION_NAMES}


def _torchvision_run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's output before torchvision's final upsampling (the auxiliary head is skipped)."""
    from torchvision.models.segmentation import LRASPP

    features = model.backbone(x)  # type: ignore[operator]
    return model.classifier(features if isinstance(model, LRASPP) else features["out"])  # type: ignore[operator]


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A local state dict (`torch.load(weights_only=True)`); {"model": sd} / {"state_dict": sd} and DDP's
    `module.` prefix are unwrapped."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a PyTorch file, pickled objects
        raise UserError(f"the torchvision teacher weights {path} cannot be read as a state dict "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); save them with "
                        f"torch.save(model.state_dict(), PATH)") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"the torchvision teacher weights {path} hold a {type(obj).__name__}, not a state dict; "
                        f"save them with torch.save(model.state_dict(), PATH)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_torchvision(spec: str) -> tuple[nn.Module, Run, TeacherPreprocess, list[str]]:
    """`torchvision:NAME:WEIGHTS`: NAME's builder with `weights=None, weights_backbone=None` (nothing is
    downloaded), num_classes from the classifier's last conv in WEIGHTS, aux_loss when it has aux_classifier
    keys. Classes: VOC's names for 21 classes, else class0.. (no names). ImageNet mean/std."""
    name, sep, weights = spec.partition(":")
    if name not in TORCHVISION_NAMES or not sep or not weights:
        raise UserError(f"teacher 'torchvision:{spec}' is not torchvision:NAME:WEIGHTS with NAME one of "
                        f"{', '.join(TORCHVISION_NAMES)} and WEIGHTS a local state dict file")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"the torchvision teacher weights {path} do not exist; give a state dict saved with "
                        f"torch.save(model.state_dict(), PATH)")
    state = _state_dict(path)
    convs = [v for k, v in state.items() if k.startswith("classifier.") and k.endswith("weight") and v.dim() == 4]
    if not convs:
        raise UserError(f"the torchvision teacher weights {path} have no classifier.* conv weights; they are not "
                        f"the state dict of a torchvision segmentation model")
    k = int(convs[-1].shape[0])
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": k}
    if not name.startswith("lraspp"):
        kwargs["aux_loss"] = any(key.startswith("aux_classifier.") for key in state)
    model = _torchvision_builders()[name](**kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e).splitlines()[0])
        raise UserError(f"the torchvision teacher weights {path} do not fit {name} with {k} classes "
                        f"({first[:200]}); name the builder they were trained with") from e
    if k == 21:
        from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

        classes = list(DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])
    else:
        classes = [f"class{i}" for i in range(k)]
    return model, _torchvision_run, IMAGENET, classes


def _smp_run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The segmentation head's conv output, before its upsampling and activation (smp's SegmentationHead
    is conv, upsampling, activation): stride 1 for U-Net-like decoders, 4 for FPN, 8 for DeepLabV3. Other
    heads (DPT): the model's output (at the input size)."""
    from segmentation_models_pytorch.base.heads import SegmentationHead

    head = model.segmentation_head
    seen: list[torch.Tensor] = []
    hook = head[0].register_forward_hook(lambda m, i, o: seen.append(o)) \
        if isinstance(head, SegmentationHead) else None
    try:
        out = model(x)
    except RuntimeError as e:
        if "Wrong input shape" in str(e):
            raise UserError(f"the smp teacher {str(e).splitlines()[0]}; use crops (data.crop_size) divisible by the "
                            f"encoder's output stride") from e
        raise
    finally:
        if hook is not None:
            hook.remove()
    if seen:
        return seen[-1]
    return out[0] if isinstance(out, tuple) else out


def load_smp(path: str) -> tuple[nn.Module, Run, TeacherPreprocess, list[str]]:
    """`smp:DIR`: `smp.from_pretrained(DIR, encoder_weights=None, local_files_only=True)` (the saved weights
    hold the encoder: nothing is fetched). Classes: config.json's `id2label` ({id: name}) or `class_names`
    (a list) when present, else class0.. (no names). Pre-processing: config.json's `mean`/`std` (on [0, 1]
    pixels) when present, else ImageNet's."""
    folder = _folder(path, "smp", [["config.json"], ["model.safetensors", "pytorch_model.bin"]])
    smp = _import("segmentation_models_pytorch", "smp")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{folder / 'config.json'} is not readable JSON ({e}); save the model again") from e
    try:
        model = smp.from_pretrained(str(folder), encoder_weights=None, local_files_only=True)
    except (OSError, ValueError, KeyError, AttributeError, RuntimeError, TypeError) as e:
        raise UserError(f"segmentation-models-pytorch {smp.__version__} cannot load {folder} "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); save it with "
                        f"model.save_pretrained(DIR) from this smp version") from e
    k = int(model.segmentation_head[0].out_channels) if isinstance(model.segmentation_head[0], nn.Conv2d) \
        else int(config.get("classes", 1))
    if isinstance(config.get("id2label"), Mapping):
        names = {int(i): str(n) for i, n in config["id2label"].items()}
        classes = [names.get(i, f"class{i}") for i in range(k)]
    elif isinstance(config.get("class_names"), list) and len(config["class_names"]) == k:
        classes = [str(n) for n in config["class_names"]]
    else:
        classes = [f"class{i}" for i in range(k)]
    pre = IMAGENET
    if config.get("mean") and config.get("std"):
        pre = TeacherPreprocess(tuple(map(float, config["mean"])), tuple(map(float, config["std"])))  # type: ignore[arg-type]
    return model, _smp_run, pre, classes


LOADERS: dict[str, Callable[[str], tuple[nn.Module, Run, TeacherPreprocess, list[str]]]] = {
    "hf": load_hf,
    "torchvision": load_torchvision,
    "smp": load_smp,
}


def is_foreign(text: str) -> bool:
    """True for `hf:...`, `torchvision:...`, `smp:...` teacher sources."""
    kind, sep, _ = str(text).partition(":")
    return bool(sep) and kind in LOADERS


def parse_source(text: str) -> tuple[str, str]:
    """`kind:rest` -> (kind, rest)."""
    if not is_foreign(text):
        raise UserError(f"teacher '{text}' is not a foreign teacher; write hf:DIR, torchvision:NAME:WEIGHTS or smp:DIR")
    kind, _, rest = str(text).partition(":")
    return kind, rest


def load_foreign_teacher(text: str, student_classes: Sequence[str], student_mean: Sequence[float],
                         student_std: Sequence[float], class_map_spec: str | Mapping[str, Any] | None = None,
                         layers: Sequence[str] = (), device: str | torch.device = "cpu") -> ForeignTeacher:
    """Load `text` offline, map its classes onto `student_classes` (`class_map`; refused in one sentence when
    they cannot be mapped) and wrap it as a frozen ForeignTeacher on `device` with hooks on `layers`."""
    kind, rest = parse_source(text)
    model, run, pre, classes = LOADERS[kind](rest)
    cmap = class_map(student_classes, classes, class_map_spec, who=f"the teacher {text}")
    model = model.to(device).eval().requires_grad_(False)
    return ForeignTeacher(model, run, pre, student_mean, student_std, cmap, classes, layers, kind, text).to(device)


def teacher_fingerprint(text: str) -> str:
    """sha256 over what defines the teacher, for cache keys: its kind (and torchvision NAME), then for a
    folder every file (sorted relative paths and contents), for a file its bytes. Moving the files keeps it."""
    kind, rest = parse_source(text)
    h = hashlib.sha256(kind.encode())
    if kind == "torchvision":
        name, _, weights = rest.partition(":")
        h.update(f":{name}\0".encode())
        files = [(Path(weights).expanduser(), "")]
        if not files[0][0].is_file():
            raise UserError(f"the torchvision teacher weights {files[0][0]} do not exist; check the path")
    else:
        folder = Path(rest).expanduser()
        if not folder.is_dir():
            raise UserError(f"the {kind} teacher folder {folder} does not exist; check the path")
        files = sorted(((p, p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file()),
                       key=lambda t: t[1])
    for p, rel in files:
        h.update(f"{rel}\0{p.stat().st_size}\0".encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()

