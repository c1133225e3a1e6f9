"""Models: every recipe's shapes and feature contract, heads, detach_encoder, arch round trip, weights
loading, ONNX export, FLOP counting."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.errors import UserError
from train.config import ModelConfig
from train.models import RECIPES, Segmentor, build_model, count_params, gflops
from train.models.encoder import Encoder
from train.models.flops import counted_flops, format_flops, forward_flops
from train.models.heads.psp import adaptive_avg_pool

K = 5
HEADS = ["deeplabv3", "pspnet", "lraspp"]


pytestmark = pytest.mark.usefixtures("one_thread")


def small(head: str, output_stride: int = 8, aux_head: bool = True) -> Segmentor:
    """Each head on the cheapest timm encoder (real-tensor tests stay fast on 2 cores)."""
    torch.manual_seed(0)
    return build_model({"recipe": f"test_{head}", "encoder": "mobilenetv3_small_050", "head": head,
                        "num_classes": K, "output_stride": output_stride, "aux_head": aux_head,
                        "head_channels": 16})


def check_contract(model, out, x) -> None:
    info = {f.name: f for f in model.feature_info}
    assert list(info) == ["stage0", "stage1", "stage2", "stage3", "stage4", "decoder"]
    assert set(out.features) == set(info)
    for name, f in info.items():
        t = out.features[name]
        assert t.shape == (x.shape[0], f.channels, x.shape[2] // f.reduction, x.shape[3] // f.reduction), name
    assert out.logits.shape == (x.shape[0], K, x.shape[2] // model.stride, x.shape[3] // model.stride)
    assert info["stage0"].reduction == 2
    dec = info["decoder"]
    assert (dec.channels, dec.reduction) == (model.head.decoder_channels, model.head.decoder_stride)
    if model.arch["head"] == "lraspp":  # the high branch at stage4's stride; the classifier also reads `low`
        assert dec.reduction == info["stage4"].reduction
        assert model.head.classifier.in_channels == info[model.head.low_name].channels + dec.channels
    else:  # the classifier's input
        assert dec.reduction == model.stride
        assert model.head.classifier.in_channels == dec.channels


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_shapes_and_feature_info(recipe: str) -> None:
    # The meta device gives every shape without computing (fast for the ResNet-101 teacher too).
    with torch.device("meta"):
        model = build_model(ModelConfig(recipe=recipe), K)
        x = torch.zeros(2, 3, 64, 128)
        out = model(x)
    r = RECIPES[recipe]
    assert model.arch == {"recipe": recipe, **r, "num_classes": K}
    check_contract(model, out, x)
    info = {f.name: f for f in model.feature_info}
    assert info["stage4"].reduction == r["output_stride"]
    assert model.stride == (8 if r["head"] == "lraspp" else r["output_stride"])
    if r["aux_head"]:
        assert out.aux is not None and out.aux.shape == (2, K, 64 // info["stage3"].reduction, 128 // info["stage3"].reduction)
    else:
        assert out.aux is None


@pytest.mark.parametrize("head", HEADS)
def test_forward_real_tensors(head: str) -> None:
    model = small(head)
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    check_contract(model, out, x)
    assert torch.isfinite(out.logits).all()
    model.eval()
    with torch.no_grad():
        seg = model.segment(x)
        ref = F.interpolate(model(x).logits, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seg, ref)


def test_lraspp_decoder_is_the_high_branch() -> None:
    # h = ReLU(BN(conv1x1(x))) · sigmoid(conv1x1(mean_hw x)) on stage4, written out from the head's
    # weights; logits = classifier(concat(low, bilinear up(h))).
    model = small("lraspp", output_stride=16, aux_head=False).eval()
    head = model.head
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        high, low = out.features["stage4"], out.features[head.low_name]
        conv, bn = head.cbr[0], head.cbr[1]
        cbr = F.relu(F.batch_norm(F.conv2d(high, conv.weight), bn.running_mean, bn.running_var, bn.weight,
                                  bn.bias, eps=bn.eps))
        gate = torch.sigmoid(F.conv2d(high.mean((2, 3), keepdim=True), head.scale[1].weight))
        h = cbr * gate
        up = F.interpolate(h, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = F.conv2d(torch.cat([low, up], 1), head.classifier.weight, head.classifier.bias)
    info = {f.name: f for f in model.feature_info}["decoder"]
    assert (info.channels, info.reduction) == (16, 16)  # head_channels, stage4's stride
    assert out.features["decoder"].shape == (2, 16, 64 // 16, 96 // 16)
    torch.testing.assert_close(out.features["decoder"], h)
    torch.testing.assert_close(out.logits, logits)
    assert out.logits.shape[-2:] == (64 // 8, 96 // 8)


def test_overrides_output_stride_aux_and_channels() -> None:
    with torch.device("meta"):
        model = build_model(ModelConfig(recipe="deeplabv3_resnet18", output_stride=16, aux_head=False,
                                        head_channels=64), K)
        out = model(torch.zeros(2, 3, 64, 128))
    assert out.aux is None and model.aux is None
    assert out.logits.shape == (2, K, 4, 8)
    assert out.features["decoder"].shape[1] == 64
    assert model.head.aspp.branches[1][0].dilation == (6, 6)  # OS16 rates 6, 12, 18
    with torch.device("meta"):
        os8 = build_model(ModelConfig(recipe="deeplabv3_resnet18"), K)
    assert [b[0].dilation[0] for b in os8.head.aspp.branches[1:4]] == [12, 24, 36]


def test_channels_last_bf16_autocast_forward_backward() -> None:
    # Small inputs: on CPUs without AVX-512 BF16 (this one) bf16 convolutions are emulated, slow.
    for head in HEADS:
        model = small(head).to(memory_format=torch.channels_last)
        x = torch.randn(2, 3, 32, 48).to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        assert out.logits.dtype == torch.bfloat16, head
        assert out.logits.shape == (2, K, 4, 6) and torch.isfinite(out.logits.float()).all()
        (out.logits.float().square().mean() + out.aux.float().square().mean()).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert model.head.classifier.weight.grad.abs().sum() > 0
        assert model.encoder.body.conv_stem.weight.grad.abs().sum() > 0


def test_detach_encoder_stops_encoder_gradients() -> None:
    model = small("deeplabv3")
    x = torch.randn(2, 3, 64, 64)
    out = model(x, detach_encoder=True)
    assert out.features["stage4"].requires_grad  # the features dict keeps the attached encoder features
    (out.logits.square().mean() + out.aux.square().mean()).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.head.classifier.weight.grad.abs().sum() > 0
    assert model.aux[-1].weight.grad.abs().sum() > 0
    # and a feature loss on the encoder output does reach the encoder
    model.zero_grad(set_to_none=True)
    out = model(x, detach_encoder=True)
    out.features["stage4"].square().mean().backward()
    assert model.encoder.body.conv_stem.weight.grad.abs().sum() > 0
    assert model.head.classifier.weight.grad is None


def test_arch_round_trip_and_deploy_state() -> None:
    model = small("pspnet", output_stride=16).eval()
    again = build_model(model.arch)
    assert again.arch == model.arch
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    again.load_state_dict(a)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval().segment(x), model.segment(x))
    deploy = build_model(model.deploy_arch)
    assert deploy.aux is None
    deploy.load_state_dict(model.deploy_state_dict(), strict=True)
    assert not any(k.startswith("aux.") for k in model.deploy_state_dict())
    assert count_params(model) == sum(p.numel() for p in deploy.parameters())
    with pytest.raises(UserError, match="classes"):
        build_model(model.arch, num_classes=K + 1)


def test_unknown_recipe_suggests() -> None:
    with pytest.raises(UserError, match="Did you mean 'deeplabv3_resnet18'"):
        build_model(ModelConfig(recipe="deeplabv3_resnet81"), K)
    with pytest.raises(UserError, match="output_stride"):
        build_model(ModelConfig(recipe="deeplabv3_resnet18", output_stride=4), K)


def test_pretrained_offline_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def offline(*args: object, **kwargs: object) -> None:
        calls.append(kwargs.get("pretrained"))
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError) as e:
        build_model(ModelConfig(recipe="deeplabv3_resnet18", pretrained=True), K)
    msg = str(e.value)
    assert "unreachable" in msg and "model.pretrained_path=" in msg and "model.pretrained=false" in msg
    assert calls == [True]


def test_pretrained_path_loads_weights(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = Encoder("resnet10t", 8)
    # a DDP-style prefix and a classifier that features_only drops
    state = {f"module.{k}": v for k, v in src.body.state_dict().items()} | {"module.fc.weight": torch.zeros(3, 512)}
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in src.body.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        torch.manual_seed(2)
        model = build_model(ModelConfig(recipe="tiny_deeplabv3_resnet10t", pretrained=True,
                                        pretrained_path=str(tmp_path / name)), K)
        for k, v in src.body.state_dict().items():
            torch.testing.assert_close(model.encoder.body.state_dict()[k], v)
    bad = dict(src.body.state_dict())
    bad["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(UserError, match="shape"):
        Encoder("resnet10t", 8, pretrained_path=str(tmp_path / "shape.pt"))
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="lacks"):
        Encoder("resnet10t", 8, pretrained_path=str(tmp_path / "other.pt"))
    with pytest.raises(UserError, match="does not exist"):
        Encoder("resnet10t", 8, pretrained_path=str(tmp_path / "missing.pt"))


def test_psp_pooling_equals_adaptive_avg_pool() -> None:
    x = torch.randn(2, 3, 7, 13)
    for bins in (1, 2, 3, 6):
        torch.testing.assert_close(adaptive_avg_pool(x, bins), F.adaptive_avg_pool2d(x, bins))


class _Segment(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.segment(x)


@pytest.mark.parametrize("head", HEADS)
def test_onnx_export_matches_pytorch(head: str) -> None:
    import onnxruntime as ort

    model = small(head).eval()
    x = torch.randn(1, 3, 64, 96)
    buf = io.BytesIO()
    torch.onnx.export(_Segment(model).eval(), (x,), buf, dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {2: "h", 3: "w"}, "logits": {2: "h", 3: "w"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 96), (1, 3, 80, 144)):  # the traced size, and another (dynamic H/W)
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model.segment(x).numpy()
        got = sess.run(None, {"images": x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_gflops_is_twice_the_macs() -> None:
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    with torch.device("meta"):
        model = build_model(ModelConfig(recipe="deeplabv3_resnet18", aux_head=False), 19)
    # hand count of one conv: 2 * Cin * Cout * k * k * H * W
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as c:
        conv(torch.zeros(1, 3, 8, 10))
    assert c.get_total_flops() == 2 * 3 * 4 * 9 * 8 * 10
    enc = model.encoder
    with FlopCounterMode(display=False) as c:
        enc(torch.zeros(1, 3, 256, 512, device="meta"))
    assert c.get_total_flops() / 1e9 == pytest.approx(48.1, rel=0.01)  # ResNet-18 dilated to OS8 at 256x512: 24 GMACs
    total = gflops(model, (256, 512))
    # the DeepLabV3 head at stride 8 (32 x 64): 1x1 + three 3x3 ASPP convs 512->256, project 1280->256,
    # 3x3 256->256, classifier 256->19 (the pooled 1x1 branch is negligible: counted separately)
    hw = 32 * 64
    head = 2 * hw * (512 * 256 * (1 + 3 * 9) + 1280 * 256 + 256 * 256 * 9 + 256 * 19) + 2 * 512 * 256
    assert total * 1e9 == pytest.approx(c.get_total_flops() + head, rel=1e-6)


def test_counted_flops_by_hand() -> None:
    """2 FLOPs per multiply-add: a 2 x 4 @ 4 x 3 linear is 48 forward, and its backward two more products
    of the same size (input and weight gradients); a 3x3 convolution 3 -> 8 channels on 8 x 8 is
    2 · 8 · 8 · 8 · 3 · 9."""
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4, requires_grad=True)
    assert counted_flops(lambda: lin(x)) == 48
    assert counted_flops(lambda: lin(x).sum().backward()) == 3 * 48
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert forward_flops(conv, (1, 3, 8, 8)) == 2 * 8 * 8 * 8 * 3 * 9
    assert forward_flops(conv, (2, 3, 8, 8)) == 2 * forward_flops(conv, (1, 3, 8, 8))
    assert format_flops(1.234e12) == "1.23 TFLOP" and format_flops(5e9) == "5 GFLOP"
