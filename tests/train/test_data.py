"""Training data: paired augmentation keeps image and label aligned, normalisation equals runtime's,
reproducible per-sample augmentation, samplers, resumable infinite loader, loaders on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.datasets import BadSample, SegmentationDataset
from runtime.preprocess import normalize, resize_image, resize_label
from train.config import Config
from train.data import (
    InfiniteLoader,
    SegmentationTorchDataset,
    TrainSampler,
    build_loaders,
    normalize_tensor,
    pad_collate,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


pytestmark = pytest.mark.usefixtures("one_thread")


def blocky(rng: np.random.Generator, h: int, w: int, block: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Random 16x16-pixel blocks; channel 0 takes bin centres 32k + 16, and label = channel 0 // 32."""
    k = rng.integers(0, 8, (h // block + 1, w // block + 1))
    ch0 = np.kron(k * 32 + 16, np.ones((block, block), int))[:h, :w]
    image = np.stack([ch0, rng.integers(0, 256, (h, w)), np.full((h, w), 99)], -1).astype(np.uint8)
    return image, (ch0 // 32).astype(np.uint8)


class MemoryReader(SegmentationDataset):
    classes = [f"c{i}" for i in range(8)]
    palette = [(i, i, i) for i in range(8)]

    def __init__(self, n: int = 6, size: tuple[int, int] = (64, 96), bad: tuple[int, ...] = (),
                 skip_bad: bool = False) -> None:
        super().__init__(None, "train", skip_bad)
        rng = np.random.default_rng(0)
        self.samples = [blocky(rng, *size) for _ in range(n)]
        self.items = [(None, None, f"s{i}") for i in range(n)]  # type: ignore[misc]
        self.bad_ids = bad

    def load(self, i: int):  # type: ignore[no-untyped-def]
        if i in self.bad_ids:
            raise BadSample(f"sample {i} is corrupt")
        return (*self.samples[i], f"s{i}")


def raw_channel0(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of channel 0 (back to 0..255)."""
    return (x[0] * STD[0] * 255 + MEAN[0] * 255).round()


def test_normalize_equals_runtime() -> None:
    img = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ours = normalize_tensor(torch.from_numpy(img).permute(2, 0, 1), MEAN, STD)
    torch.testing.assert_close(ours, torch.from_numpy(normalize(img, MEAN, STD)), atol=1e-6, rtol=0)


def test_augmentation_keeps_image_and_label_aligned() -> None:
    ds = SegmentationTorchDataset(MemoryReader(), True, crop_size=(48, 80), scale_range=(0.5, 2.0), flip=True,
                                  color_jitter=0.0, mean=MEAN, std=STD)
    padded = 0
    for seed in range(24):
        x, y = ds[(seed % 6, seed)]
        assert x.shape == (3, 48, 80) and x.dtype == torch.float32
        assert y.shape == (48, 80) and y.dtype == torch.int64
        ch0 = raw_channel0(x)
        pad = y == 255
        assert (ch0[pad] == 0).all()  # padding: image 0, label ignore
        padded += int(pad.any())
        # away from block borders (a constant 3x3 neighbourhood) resizing blends nothing: exact agreement
        hi = F.max_pool2d(ch0[None, None], 3, 1, 1)[0, 0]
        lo = -F.max_pool2d(-ch0[None, None], 3, 1, 1)[0, 0]
        pure = ~pad & (hi == lo)
        assert pure.float().mean() > 0.3 * (~pad).float().mean()
        agree = (torch.div(ch0[pure], 32, rounding_mode="floor") == y[pure]).float().mean()
        assert agree > 0.995, (seed, agree)
        # the check has teeth: a label flipped (or shifted) against its image disagrees
        assert (torch.div(ch0[pure], 32, rounding_mode="floor") == y.flip(-1)[pure]).float().mean() < 0.7
    assert padded > 0  # scales below the crop size happened


def test_color_jitter_touches_the_image_only_and_seeds_reproduce() -> None:
    kw = dict(crop_size=(48, 80), scale_range=(0.5, 2.0), flip=True, mean=MEAN, std=STD)
    plain = SegmentationTorchDataset(MemoryReader(), True, color_jitter=0.0, **kw)
    jitter = SegmentationTorchDataset(MemoryReader(), True, color_jitter=0.4, **kw)
    before = torch.get_rng_state()
    x0, y0 = plain[(2, 7)]
    x1, y1 = jitter[(2, 7)]
    x2, y2 = jitter[(2, 7)]
    assert torch.equal(torch.get_rng_state(), before)  # the per-sample seed does not touch the global RNG
    assert torch.equal(y0, y1) and not torch.allclose(x0, x1)  # same geometry, different colours
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = jitter[(2, 8)]
    assert not torch.equal(x1, x3)


def test_validation_resize_and_normalisation() -> None:
    reader = MemoryReader()
    image, label, _ = reader[1]
    native = SegmentationTorchDataset(reader, False, mean=MEAN, std=STD)
    x, y = native[1]
    torch.testing.assert_close(x, torch.from_numpy(normalize(image, MEAN, STD)))
    assert torch.equal(y, torch.from_numpy(label).long())
    resized = SegmentationTorchDataset(reader, False, mean=MEAN, std=STD, val_size=(32, 40))
    x, y = resized[1]
    torch.testing.assert_close(x, torch.from_numpy(normalize(resize_image(image, (32, 40)), MEAN, STD)))
    assert torch.equal(y, torch.from_numpy(resize_label(label, (32, 40))).long())


def test_skip_bad_validation_leaves_out_training_uses_the_next_sample() -> None:
    ds = SegmentationTorchDataset(MemoryReader(bad=(2,), skip_bad=True), False, mean=MEAN, std=STD)
    assert ds[2] is None and ds.skipped() == ["s2"]
    train = SegmentationTorchDataset(MemoryReader(bad=(2,), skip_bad=True), True, crop_size=(16, 16),
                                     scale_range=(1.0, 1.0), flip=False, mean=MEAN, std=STD)
    assert torch.equal(train[(2, 0)][1], train[(3, 0)][1]) and len(train.skipped()) == 1
    strict = SegmentationTorchDataset(MemoryReader(bad=(2,)), False, mean=MEAN, std=STD)
    with pytest.raises(BadSample):
        strict[2]


def test_train_sampler_shards_epochs_and_skip() -> None:
    a = list(TrainSampler(10, seed=3))
    assert a == list(TrainSampler(10, seed=3)) and sorted(i for i, _ in a) == list(range(10))
    assert a != list(TrainSampler(10, seed=4))
    s = TrainSampler(10, seed=3)
    s.set_epoch(1)
    assert list(s) != a
    r0, r1 = list(TrainSampler(11, 3, rank=0, world=2)), list(TrainSampler(11, 3, rank=1, world=2))
    assert len(r0) == len(r1) == 5 and not {i for i, _ in r0} & {i for i, _ in r1}
    s = TrainSampler(10, seed=3)
    s.skip(4)
    assert list(s) == a[4:] and list(s) == a  # the skip applies to one pass only


def test_pad_collate_pads_with_ignore() -> None:
    batch = [(torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.int64)),
             (torch.ones(3, 4, 2), torch.ones(4, 2, dtype=torch.int64))]
    x, y = pad_collate(batch)
    assert x.shape == (2, 3, 4, 3) and y.shape == (2, 4, 3)
    assert x[0, :, 2:].abs().sum() == 0 and (y[0, 2:] == 255).all() and (y[1, :, 2] == 255).all()
    assert (y[1, :, :2] == 1).all()


def test_infinite_loader_resumes_the_same_batches() -> None:
    def make() -> InfiniteLoader:
        ds = SegmentationTorchDataset(MemoryReader(n=5), True, crop_size=(16, 16), color_jitter=0.2,
                                      mean=MEAN, std=STD)
        return InfiniteLoader(torch.utils.data.DataLoader(ds, batch_size=2, drop_last=True,
                                                          sampler=TrainSampler(5, seed=1)))

    a = make()
    seen = [next(a) for _ in range(3)]  # 2 batches per epoch: the third opens epoch 1
    assert a.state_dict() == {"epoch": 1, "position": 1}
    assert not torch.equal(seen[0][0], seen[2][0])
    state = a.state_dict()
    rest = [next(a) for _ in range(3)]
    b = make()
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(rest, [next(b) for _ in range(3)]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert b.state_dict() == {"epoch": 2, "position": 2}


def test_build_loaders_on_synthetic() -> None:
    cfg = Config()
    d = cfg.data
    d.synthetic.num_train, d.synthetic.num_val, d.synthetic.size, d.synthetic.cache = 6, 3, (32, 64), False
    d.crop_size, d.batch_size, d.val_batch_size, d.workers = (32, 48), 2, 2, 0
    train, val, info = build_loaders(cfg, False, 0, 1)
    x, y = next(iter(train))
    assert x.shape == (2, 3, 32, 48) and y.shape == (2, 32, 48) and y.dtype == torch.int64
    assert len(train) == 3 and sum(v[0].shape[0] for v in val) == 3
    assert info.input_size == (32, 64) and tuple(info.mean) == MEAN and info.num_classes > 1
    assert int(y[y != 255].max()) < info.num_classes
    d.workers = 1
    again, _, _ = build_loaders(cfg, False, 0, 1)
    assert torch.equal(next(iter(again))[0], x)  # same seed, same first batch, whatever the workers
    d.workers = 0
    cfg.train.seed = 1
    other, _, _ = build_loaders(cfg, False, 0, 1)
    assert not torch.equal(next(iter(other))[0], x)
    _, v0, _ = build_loaders(cfg, True, 0, 2)
    _, v1, _ = build_loaders(cfg, True, 1, 2)
    assert list(v0.sampler) == [0, 2] and list(v1.sampler) == [1]


def test_random_scale_samples_labels_at_pixel_centres() -> None:
    import cv2

    from train.teachers.geometry import Geometry, apply_geometry

    label = np.random.default_rng(2).integers(0, 8, (13, 17), dtype=np.uint8)
    image = torch.zeros(3, 13, 17, dtype=torch.uint8)
    for scale in (0.6, 1.7, 2.5):
        size = (round(13 * scale), round(17 * scale))
        g = Geometry((13, 17), size, 0, 0, size, False)  # scale only: the crop is the whole scaled image
        out = apply_geometry(image, torch.from_numpy(label), g)[1].numpy()
        # centre-aligned nearest neighbour (as bilinear is); cv2.INTER_NEAREST would be shifted
        assert np.array_equal(out, cv2.resize(label, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)), scale


def test_data_info_records_the_synthetic_generator_for_runtime_eval():
    """runtime.eval rebuilds the validation data from DataInfo.extra; it must be the training generator's."""
    from runtime.datasets import DataSpec
    from train.config import load_config
    from train.data import build_loaders

    cfg = load_config(None, ["data.synthetic.num_train=8", "data.synthetic.num_val=3", "data.synthetic.size=[32,64]",
                             "data.synthetic.seed=5", "data.batch_size=2", "data.workers=0",
                             "data.synthetic.cache=false", "data.crop_size=[32,64]"])
    _, val_loader, info = build_loaders(cfg)
    assert info.extra["dataset"] == "synthetic"
    assert info.extra["synthetic"] == {"num_train": 8, "num_val": 3, "size": [32, 64], "seed": 5, "difficulty": 1.0}
    ds = DataSpec.for_model(info).open("val")
    assert len(ds) == 3 and ds[0][0].shape == (32, 64, 3)
    ref = val_loader.dataset.reader if hasattr(val_loader.dataset, "reader") else None
    if ref is not None:
        assert (ds[0][1] == ref[0][1]).all()


def test_training_readers_name_the_config_key_that_skips_a_corrupt_sample(tmp_path) -> None:
    """Training takes data.skip_bad=true (a config key), not the runtime commands' --skip-bad, nor "skip_bad"."""
    from runtime.datasets.folder import write_classes_yaml, write_sample
    from train.config import DataConfig
    from train.data import build_readers

    for split in ("train", "val"):
        write_sample(tmp_path, split, "a", np.zeros((16, 32, 3), np.uint8), np.zeros((16, 32), np.uint8))
        (tmp_path / "images" / split / "a.png").write_bytes(b"junk")
    write_classes_yaml(tmp_path, ["x", "y"], [(1, 1, 1), (2, 2, 2)])
    for reader in build_readers(DataConfig(dataset=f"folder:{tmp_path}")):
        with pytest.raises(BadSample) as e:
            reader[0]
        assert str(e.value).endswith("is corrupt or not an image; replace it, or pass data.skip_bad=true to skip it")
    train_reader, _ = build_readers(DataConfig(dataset=f"folder:{tmp_path}", skip_bad=True))
    assert list(train_reader) == [] and len(train_reader.bad) == 1
