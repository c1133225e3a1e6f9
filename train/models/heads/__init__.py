"""Decode heads (name -> class) and the FCN auxiliary head.

A decode head is built from the encoder's `feature_info`, reads the encoder's feature dict and returns
`(logits, decoder)`: logits at `head.stride` and `decoder` at `head.decoder_stride`, the deep feature that
distillation reads (the input of the final 1x1 classifier; for LR-ASPP its high branch at stage4's stride)."""

from __future__ import annotations

from train.models.heads.aspp import DeepLabV3Head
from train.models.heads.base import DecodeHead
from train.models.heads.fcn import FCNHead
from train.models.heads.lraspp import LRASPPHead
from train.models.heads.psp import PSPHead

HEADS: dict[str, type[DecodeHead]] = {
    "deeplabv3": DeepLabV3Head,
    "pspnet": PSPHead,
    "lraspp": LRASPPHead,
}

__all__ = ["HEADS", "DecodeHead", "DeepLabV3Head", "FCNHead", "LRASPPHead", "PSPHead"]
