"""Named model recipes: a plain dict name -> encoder (timm name), head, output stride, aux head,
head channels. `model.recipe=...` picks one; the other `model.*` keys override its fields.

Teachers use dilated ResNets at output stride 8 (DeepLabV3 as in torchvision). Students are compact
encoders; LR-ASPP follows the MobileNetV3 paper (encoder at output stride 16, stride-8 low-level
branch, logits at stride 8; its distilled `decoder` feature is the stride-16 high branch). The
`tiny_*` recipes are for tests and smoke runs.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    # teachers
    "deeplabv3_resnet101": dict(encoder="resnet101", head="deeplabv3", output_stride=8, aux_head=True,
                                head_channels=256),
    "deeplabv3_resnet50": dict(encoder="resnet50", head="deeplabv3", output_stride=8, aux_head=True,
                               head_channels=256),
    "deeplabv3_resnet34": dict(encoder="resnet34", head="deeplabv3", output_stride=8, aux_head=True,
                               head_channels=256),
    # students
    "deeplabv3_resnet18": dict(encoder="resnet18", head="deeplabv3", output_stride=8, aux_head=True,
                               head_channels=256),
    "pspnet_resnet18": dict(encoder="resnet18", head="pspnet", output_stride=8, aux_head=True,
                            head_channels=256),
    "deeplabv3_mobilenetv2": dict(encoder="mobilenetv2_100", head="deeplabv3", output_stride=8, aux_head=True,
                                  head_channels=256),
    "lraspp_mobilenetv3_large": dict(encoder="mobilenetv3_large_100", head="lraspp", output_stride=16,
                                     aux_head=False, head_channels=128),
    # tiny models for tests and smoke runs (random init)
    "tiny_deeplabv3_resnet10t": dict(encoder="resnet10t", head="deeplabv3", output_stride=8, aux_head=True,
                                     head_channels=32),
    "tiny_pspnet_resnet10t": dict(encoder="resnet10t", head="pspnet", output_stride=8, aux_head=True,
                                  head_channels=32),
    "tiny_lraspp_mobilenetv3": dict(encoder="mobilenetv3_small_050", head="lraspp", output_stride=16,
                                    aux_head=False, head_channels=32),
}
