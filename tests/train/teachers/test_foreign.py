"""Foreign teachers from tiny random-weight models saved to a temporary folder (nothing is downloaded):
each teacher's logits equal the model's own on the teacher-normalised input, and KD's loss equals the loss
computed by hand from those logits."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from runtime.errors import UserError
from runtime.metadata import IMAGENET_MEAN, IMAGENET_STD
from train.losses.kd import KD
from train.losses.objective import StepInfo
from train.models.output import FeatureInfo, SegOutput
from train.teachers.foreign import (
    TeacherPreprocess,
    is_foreign,
    layer_names,
    load_foreign_teacher,
    teacher_fingerprint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

S_MEAN, S_STD = IMAGENET_MEAN, IMAGENET_STD  # the student's normalisation
ROAD_CAR_TRUCK = {0: "road", 1: "car", 2: "truck"}
VEHICLE = {"vehicle": ["car", "truck"]}


def by_hand_input(x, mean, std):
    """The student's input as the teacher expects it: back to [0, 1] pixels, then the teacher's mean/std."""
    ms, ss = torch.tensor(S_MEAN).view(1, 3, 1, 1), torch.tensor(S_STD).view(1, 3, 1, 1)
    mt, st = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return ((x * ss + ms) - mt) / st


def map_vehicle(z):
    """[road, car, truck] -> [road, vehicle] by hand: vehicle = log(e^car + e^truck)."""
    return torch.stack([z[:, 0], (z[:, 1].exp() + z[:, 2].exp()).log()], 1)


def check_kd(out: SegOutput, z_t: torch.Tensor) -> None:
    """KD's term from the teacher's SegOutput == τ² · mean KL computed by hand from the model's logits z_t."""
    k = z_t.shape[1]
    z_s = torch.randn(2, k, 8, 16, generator=torch.Generator().manual_seed(1))
    kd = KD(tau=2.0)(SegOutput(logits=z_s), out, None, StepInfo(0, 0.0))["kd"]
    zt = F.interpolate(z_t.float(), size=(8, 16), mode="bilinear", align_corners=False)
    p = torch.softmax(zt / 2, 1)
    by_hand = 4 * (p * (p.log() - torch.log_softmax(z_s / 2, 1))).sum(1).mean()
    torch.testing.assert_close(kd, by_hand, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------------
# Hugging Face


@pytest.fixture(scope="module")
def segformer(tmp_path_factory):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                             decoder_hidden_size=16, num_labels=3, id2label=ROAD_CAR_TRUCK,
                             label2id={v: k for k, v in ROAD_CAR_TRUCK.items()})
    model = SegformerForSemanticSegmentation(config).eval()
    folder = tmp_path_factory.mktemp("segformer")
    model.save_pretrained(folder)
    # what SegformerImageProcessor(image_mean=[0.5]*3, image_std=[0.5]*3, size=64x128).save_pretrained writes
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3, "image_processor_type": "SegformerImageProcessor", "resample": 2,
        "rescale_factor": 1 / 255, "size": {"height": 64, "width": 128}}))
    return folder, model


def test_hf_segformer_logits_map_features_and_kd(segformer, x):
    folder, model = segformer
    t = load_foreign_teacher(f"hf:{folder}", ["road", "vehicle"], S_MEAN, S_STD, VEHICLE,
                             layers=["decode_head.linear_fuse"])
    assert t.preprocess == TeacherPreprocess((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (64, 128))
    assert t.teacher_classes == ["road", "car", "truck"] and t.num_classes == 2
    with torch.no_grad():
        out = t(x)
        z = model(pixel_values=by_hand_input(x, [0.5] * 3, [0.5] * 3)).logits
    expected = map_vehicle(z)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    assert t.stride == 4 and out.logits.shape[-2:] == (16, 32)
    assert t.feature_info == [FeatureInfo("decode_head.linear_fuse", 16, 4), FeatureInfo("decoder", 16, 4)]
    assert out.features["decode_head.linear_fuse"].shape == (2, 16, 16, 32)
    assert t.to_dict()["class_map"]["groups"] == [[0], [1, 2]]
    check_kd(out, expected)


def test_hf_layers_and_refusals(segformer):
    folder, _ = segformer
    t = load_foreign_teacher(f"hf:{folder}", ["road", "car", "truck"], S_MEAN, S_STD)
    assert t.class_map is None and t.stride == 4
    names = layer_names(t)
    assert "decode_head.linear_fuse" in names and "decode_head.classifier" in names
    assert "segformer.stages.3" in names
    assert "segformer.stages.0.layer_norm" not in names  # a 3-D token sequence
    assert "segformer.stages.0.blocks.0.drop_path" not in names  # runs twice
    with pytest.raises(UserError, match=r"no layer 'decode_head\.nope'.*include .*decode_head"):
        load_foreign_teacher(f"hf:{folder}", ["road", "car", "truck"], S_MEAN, S_STD,
                             layers=["decode_head.nope"])
    for layer, match in (("segformer.stages.0.layer_norm", "outputs a 3-D tensor"),
                         ("segformer.stages.0.patch_embeddings", "outputs a tuple"),
                         ("segformer.stages.0.blocks.0.drop_path", "runs 2 times")):
        with pytest.raises(UserError, match=match):
            load_foreign_teacher(f"hf:{folder}", ["road", "car", "truck"], S_MEAN, S_STD, layers=[layer])
    with pytest.raises(UserError, match="no teacher class: vehicle"):
        load_foreign_teacher(f"hf:{folder}", ["road", "vehicle"], S_MEAN, S_STD)


def test_hf_missing_folder_or_weights(tmp_path, segformer):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope'} does not exist"):
        load_foreign_teacher(f"hf:{tmp_path / 'nope'}", ["road"], S_MEAN, S_STD)
    folder = tmp_path / "no_weights"
    folder.mkdir()
    shutil.copy(segformer[0] / "config.json", folder)
    with pytest.raises(UserError, match=f"{folder} has no model.safetensors"):
        load_foreign_teacher(f"hf:{folder}", ["road"], S_MEAN, S_STD)


def test_fingerprint_follows_the_files(segformer, tmp_path):
    folder, _ = segformer
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert teacher_fingerprint(f"hf:{folder}") == teacher_fingerprint(f"hf:{copy}")
    (copy / "preprocessor_config.json").write_text("{}")
    assert teacher_fingerprint(f"hf:{folder}") != teacher_fingerprint(f"hf:{copy}")
    assert is_foreign(f"hf:{folder}") and is_foreign("torchvision:x:y") and is_foreign("smp:d")
    assert not is_foreign("runs/teacher/best.pt") and not is_foreign("model.onnx")


def test_hf_upernet_logits_before_its_upsampling(tmp_path, x):
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    torch.manual_seed(0)
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, hidden_size=16, num_labels=3,
                                                         use_auxiliary_head=False)).eval()
    model.save_pretrained(tmp_path)
    # no preprocessor_config.json: ImageNet's mean/std; no class names (LABEL_k): mapped by ids
    t = load_foreign_teacher(f"hf:{tmp_path}", ["a", "b", "c"], S_MEAN, S_STD, {"a": [0], "b": [1], "c": [2]},
                             layers=["backbone.encoder.stages.3"])
    assert t.teacher_classes == ["class0", "class1", "class2"] and t.class_map is None
    assert t.preprocess.mean == IMAGENET_MEAN and t.preprocess.size is None
    with torch.no_grad():
        out = t(x)
        z = model(pixel_values=by_hand_input(x, IMAGENET_MEAN, IMAGENET_STD)).logits  # upsampled to 64 x 128
    assert t.stride == 4 and out.logits.shape[-2:] == (16, 32)
    up = F.interpolate(out.logits, size=(64, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, z, rtol=1e-5, atol=1e-5)
    assert t.feature_info == [FeatureInfo("backbone.encoder.stages.3", 64, 32), FeatureInfo("decoder", 64, 32)]
    check_kd(out, out.logits)
    check_kd(SegOutput(logits=up), z)


def test_hf_mask2former_semantic_logits(tmp_path, x):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    swin = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=swin, num_labels=3, id2label=ROAD_CAR_TRUCK,
                               label2id={v: k for k, v in ROAD_CAR_TRUCK.items()}, hidden_dim=32,
                               mask_feature_size=32, feature_size=32, encoder_feedforward_dim=32,
                               dim_feedforward=32, num_queries=5, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, use_pretrained_backbone=False)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    t = load_foreign_teacher(f"hf:{tmp_path}", ["road", "vehicle"], S_MEAN, S_STD, VEHICLE)
    with torch.no_grad():
        out = t(x)
        o = model(pixel_values=by_hand_input(x, IMAGENET_MEAN, IMAGENET_STD))
    cls = o.class_queries_logits.softmax(-1)[..., :3]  # drop "no object"
    prob = (cls[:, :, :, None, None] * o.masks_queries_logits.sigmoid()[:, :, None]).sum(1)
    z = prob.clamp_min(1e-8).log()
    expected = map_vehicle(z)
    torch.testing.assert_close(out.logits, expected, rtol=1e-4, atol=1e-5)
    assert t.stride == 4
    check_kd(out, expected)


def test_hf_oneformer_runs_on_the_semantic_task(tmp_path, x):
    from transformers import CLIPTokenizer, OneFormerConfig, OneFormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    swin = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = OneFormerConfig(backbone_config=swin, num_labels=3, id2label=ROAD_CAR_TRUCK,
                             label2id={v: k for k, v in ROAD_CAR_TRUCK.items()}, hidden_dim=32, mask_dim=32,
                             conv_dim=32, encoder_feedforward_dim=32, dim_feedforward=32, num_queries=5,
                             encoder_layers=1, decoder_layers=2, num_attention_heads=2, text_encoder_width=32,
                             text_encoder_num_layers=1, text_encoder_proj_layers=1, text_encoder_n_ctx=4,
                             text_encoder_vocab_size=64, task_seq_len=8, text_encoder_context_length=8,
                             max_seq_len=8, use_pretrained_backbone=False)
    model = OneFormerForUniversalSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="needs its tokenizer"):
        load_foreign_teacher(f"hf:{tmp_path}", ["road", "vehicle"], S_MEAN, S_STD, VEHICLE)
    # a character-level CLIP tokenizer (no merges): what OneFormerProcessor.save_pretrained would write
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    tokenizer.save_pretrained(tmp_path)
    t = load_foreign_teacher(f"hf:{tmp_path}", ["road", "vehicle"], S_MEAN, S_STD, VEHICLE)
    tok = tokenizer(["the task is semantic"], padding="max_length", max_length=8, truncation=True)
    task = torch.tensor(tok["input_ids"]) * torch.tensor(tok["attention_mask"])
    with torch.no_grad():
        out = t(x)
        o = model(pixel_values=by_hand_input(x, IMAGENET_MEAN, IMAGENET_STD), task_inputs=task.expand(2, -1))
    prob = torch.einsum("nqk,nqhw->nkhw", o.class_queries_logits.softmax(-1)[..., :3], o.masks_queries_logits.sigmoid())
    expected = map_vehicle(prob.clamp_min(1e-8).log())
    torch.testing.assert_close(out.logits, expected, rtol=1e-4, atol=1e-5)
    check_kd(out, expected)


def test_hf_preprocess_on_0_255_pixels(tmp_path):
    from train.teachers.foreign import hf_preprocess

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_rescale": False, "image_mean": [123.675, 116.28, 103.53], "image_std": [58.395, 57.12, 57.375],
        "size": {"shortest_edge": 512}}))
    pre = hf_preprocess(tmp_path)
    assert pre.mean == pytest.approx(IMAGENET_MEAN) and pre.std == pytest.approx(IMAGENET_STD)
    assert pre.size is None and pre.to_dict()["size"] is None


# ----------------------------------------------------------------------------------------------
# torchvision


def test_torchvision_lraspp_random_weights(tmp_path, x):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    weights = tmp_path / "lraspp.pt"
    torch.save(model.state_dict(), weights)
    spec = tmp_path / "map.yaml"
    spec.write_text("road: [0]\nvehicle: [1, 2]\n")
    t = load_foreign_teacher(f"torchvision:lraspp_mobilenet_v3_large:{weights}", ["road", "vehicle"], S_MEAN,
                             S_STD, str(spec), layers=["classifier.cbr"])
    assert t.teacher_classes == ["class0", "class1", "class2"]
    with torch.no_grad():
        out = t(x)
        xt = by_hand_input(x, IMAGENET_MEAN, IMAGENET_STD)
        z = model.classifier(model.backbone(xt))  # LR-ASPP's logits before torchvision's upsampling
        full = model(xt)["out"]
    assert t.stride == 8 and out.logits.shape[-2:] == (8, 16)
    assert t.feature_info == [FeatureInfo("classifier.cbr", 128, 16), FeatureInfo("decoder", 128, 16)]
    up = F.interpolate(z, size=(64, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, full, rtol=1e-5, atol=1e-5)  # the same logits torchvision upsamples
    torch.testing.assert_close(out.logits, map_vehicle(z), rtol=1e-5, atol=1e-5)
    check_kd(out, map_vehicle(z))
    with pytest.raises(UserError, match="no names"):
        load_foreign_teacher(f"torchvision:lraspp_mobilenet_v3_large:{weights}", ["road", "car"], S_MEAN, S_STD)


def test_torchvision_deeplabv3_voc_names_and_aux_weights(tmp_path, x):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    weights = tmp_path / "deeplab.pt"
    torch.save({"model": model.state_dict()}, weights)
    t = load_foreign_teacher(f"torchvision:deeplabv3_mobilenet_v3_large:{weights}", ["person", "Car", "bus"],
                             S_MEAN, S_STD)
    assert t.teacher_classes[:2] == ["__background__", "aeroplane"] and len(t.teacher_classes) == 21
    ids = [t.teacher_classes.index(c) for c in ("person", "car", "bus")]
    with torch.no_grad():
        out = t(x)
        xt = by_hand_input(x, IMAGENET_MEAN, IMAGENET_STD)
        z = model.classifier(model.backbone(xt)["out"])
        full = model(xt)["out"]
    assert t.stride == 16
    torch.testing.assert_close(out.logits, z[:, ids], rtol=1e-5, atol=1e-5)
    up = F.interpolate(z, size=(64, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, full, rtol=1e-5, atol=1e-5)  # the same logits torchvision upsamples
    check_kd(out, z[:, ids])


def test_torchvision_missing_or_wrong_weights(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope.pt'} do not exist"):
        load_foreign_teacher(f"torchvision:lraspp_mobilenet_v3_large:{tmp_path / 'nope.pt'}", ["a"], S_MEAN, S_STD)
    with pytest.raises(UserError, match="NAME one of"):
        load_foreign_teacher("torchvision:resnet50:w.pt", ["a"], S_MEAN, S_STD)
    bad = tmp_path / "bad.pt"
    torch.save({"classifier.0.weight": torch.zeros(3, 8, 1, 1)}, bad)
    with pytest.raises(UserError, match="do not fit lraspp_mobilenet_v3_large"):
        load_foreign_teacher(f"torchvision:lraspp_mobilenet_v3_large:{bad}", ["a"], S_MEAN, S_STD)


# ----------------------------------------------------------------------------------------------
# segmentation-models-pytorch


@pytest.fixture(scope="module")
def smp_fpn(tmp_path_factory):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.FPN("resnet18", encoder_weights=None, classes=3, decoder_segmentation_channels=32,
                    decoder_pyramid_channels=32).eval()
    folder = tmp_path_factory.mktemp("smp")
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(class_names=["road", "car", "truck"], mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25],
                  encoder_weights="imagenet")  # as saved from a model built on ImageNet weights: not fetched
    (folder / "config.json").write_text(json.dumps(config))
    return folder, model


def test_smp_fpn_logits_at_the_head(smp_fpn, x):
    folder, model = smp_fpn
    t = load_foreign_teacher(f"smp:{folder}", ["road", "vehicle"], S_MEAN, S_STD, VEHICLE,
                             layers=["decoder.merge"])
    assert t.teacher_classes == ["road", "car", "truck"]
    assert t.preprocess == TeacherPreprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with torch.no_grad():
        out = t(x)
        xt = by_hand_input(x, [0.5] * 3, [0.25] * 3)
        z = model.segmentation_head[0](model.decoder(model.encoder(xt)))  # the head's conv, before its upsampling
        full = model(xt)
    assert t.stride == 4 and t.feature_info == [FeatureInfo("decoder.merge", 32, 4), FeatureInfo("decoder", 32, 4)]
    torch.testing.assert_close(out.logits, map_vehicle(z), rtol=1e-5, atol=1e-5)
    up = F.interpolate(z, scale_factor=4, mode="bilinear", align_corners=True)
    torch.testing.assert_close(up, full, rtol=1e-5, atol=1e-5)
    check_kd(out, map_vehicle(z))


def test_smp_missing_folder_or_weights(tmp_path, smp_fpn):
    with pytest.raises(UserError, match=f"{tmp_path / 'gone'} does not exist"):
        load_foreign_teacher(f"smp:{tmp_path / 'gone'}", ["a"], S_MEAN, S_STD)
    shutil.copy(smp_fpn[0] / "config.json", tmp_path)
    with pytest.raises(UserError, match=f"{tmp_path} has no model.safetensors or pytorch_model.bin"):
        load_foreign_teacher(f"smp:{tmp_path}", ["a"], S_MEAN, S_STD)
