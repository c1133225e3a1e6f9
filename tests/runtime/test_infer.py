from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

import runtime.infer as infer
from runtime.backends import load_backend
from runtime.postprocess import labels_from_output
from runtime.preprocess import preprocess_for
from runtime.sources import open_source


def _count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_video_in_video_masks_and_json_out(onnx_model, video, tmp_path, capsys):
    model = onnx_model()
    out, masks, js = tmp_path / "out" / "o.mp4", tmp_path / "masks", tmp_path / "run.json"
    rc = infer.main(["--model", str(model), "--source", str(video), "--save", str(out), "--masks", str(masks),
                     "--json", str(js), "--queue", "1", "--threads", "1"])
    assert rc == 0
    assert _count_frames(out) == 10
    assert not list(out.parent.glob(".*partial*"))
    files = sorted(masks.glob("*.png"))
    assert len(files) == 10
    with load_backend(model) as b:
        for f, frame in zip(files, open_source(str(video))):
            ref = labels_from_output(b.infer(preprocess_for(b.info, frame.image)), frame.image.shape[:2])[0]
            np.testing.assert_array_equal(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), ref)
    report = json.loads(js.read_text())
    assert report["frames_out"] == 10 and report["dropped"] == 0 and report["drop_oldest"] is False
    assert {"capture", "preprocess", "infer", "draw"} <= set(report["stages"])
    assert {"p50", "p90", "p99"} <= set(report["end_to_end"]) and "environment" in report
    assert "FPS" in capsys.readouterr().out


def test_interrupt_mid_stream_leaves_playable_video(onnx_model, video, tmp_path, monkeypatch):
    real_write = infer.Sink.write

    def write_then_interrupt(self, *a):
        if self.count == 4:
            raise KeyboardInterrupt
        real_write(self, *a)

    monkeypatch.setattr(infer.Sink, "write", write_then_interrupt)
    out, js = tmp_path / "o.mp4", tmp_path / "s.json"
    assert infer.main(["--model", str(onnx_model()), "--source", str(video), "--save", str(out), "--json", str(js)]) == 0
    assert _count_frames(out) == 4
    assert json.loads(js.read_text())["interrupted"] is True
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_save_folder_side_by_side_and_max_frames(onnx_model, video, tmp_path):
    out = tmp_path / "pics"
    assert infer.main(["--model", str(onnx_model(dynamic=True)), "--source", str(video), "--save", str(out),
                       "--visualize", "side-by-side", "--size", "32x64", "--max-frames", "3", "--no-stats"]) == 0
    pics = sorted(out.glob("*.jpg"))
    assert [p.stem for p in pics] == ["clip_000000", "clip_000001", "clip_000002"]
    assert cv2.imread(str(pics[0])).shape == (64, 256, 3)


def test_raw_mode_records_the_frames_as_captured(onnx_model, video, tmp_path):
    """--visualize raw saves the source frames untouched (no overlay, no stats text): footage for data.unlabeled."""
    out = tmp_path / "raw"
    assert infer.main(["--model", str(onnx_model()), "--source", str(video), "--save", str(out),
                       "--visualize", "raw", "--max-frames", "2"]) == 0
    cap = cv2.VideoCapture(str(video))
    for pic in sorted(out.glob("*.jpg")):
        ok, src = cap.read()
        assert ok
        saved = cv2.imread(str(pic)).astype(np.int16)
        assert saved.shape == src.shape
        assert np.abs(saved - src).mean() < 2.0  # JPEG round trip of the same frame; an overlay moves it far more
    cap.release()


def test_visualize_modes():
    img = np.full((4, 6, 3), 100, np.uint8)
    labels = np.zeros((4, 6), np.uint8)
    labels[:, 3:] = 1
    pal = [(0, 0, 0), (200, 0, 0)]
    np.testing.assert_array_equal(infer.visualize(img, labels, pal, "mask")[0, 4], [200, 0, 0])
    assert tuple(infer.visualize(img, labels, pal, "overlay", 0.5)[0, 4]) == (150, 50, 50)
    assert infer.visualize(img, labels, pal, "side-by-side").shape == (4, 12, 3)


@pytest.mark.parametrize("argv, message", [
    (["--source", "{tmp}/missing.mp4"], "missing.mp4"),
    (["--source", "{video}", "--size", "64by128"], "64by128"),
    (["--source", "{video}", "--save", "{tmp}/o.gif"], "o.gif"),
    # a static 64x128 model: drop --size (it was told to "resize with runtime.preprocess")
    (["--source", "{tmp}/missing.mp4", "--size", "32x64"], "m.onnx has a static 64x128 input and runs only at that "
                                                           "size; drop --size 32x64"),
])
def test_user_errors(onnx_model, video, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, video=video) for a in argv]
    assert infer.main(["--model", str(onnx_model()), *argv]) == 2
    assert message in capsys.readouterr().err


def test_truncated_model_and_headless_show(tmp_path, video, capsys):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04trunc")
    assert infer.main(["--model", str(bad), "--source", str(video)]) == 2
    assert "cut.onnx" in capsys.readouterr().err
    if not re.search(r"GUI:\s+NONE", cv2.getBuildInformation()):
        pytest.skip("this OpenCV has a GUI")
    # checked before the (missing) model is opened
    assert infer.main(["--model", str(tmp_path / "none.onnx"), "--source", str(video), "--show"]) == 2
    assert "headless" in capsys.readouterr().err


def test_sigterm_finalises_the_video_and_exits_143(onnx_model, tmp_path, colour_frames):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    clip = tmp_path / "long.mp4"  # 300 frames at 20 FPS: 15 s when paced
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 20.0, (128, 64))
    for f in colour_frames(10) * 30:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    out = tmp_path / "o.mp4"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "runtime.infer", "--model", str(onnx_model()), "--source",
                             str(clip), "--save", str(out), "--threads", "1", "--source-fps", "20"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".o.partial.mp4"
    deadline = time.time() + 60
    while not (partial.is_file() and partial.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "interrupted" in stdout and not partial.exists()
    assert 0 < _count_frames(out) < 300


@pytest.mark.parametrize("flag, what", [("--save", "--save video"), ("--json", "--json file"),
                                        ("--masks", "--masks folder")])
def test_unwritable_outputs_fail_before_the_first_frame(onnx_model, video, tmp_path, capsys, flag, what):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    target = blocker / ("o.mp4" if flag == "--save" else "o.json" if flag == "--json" else "masks")
    assert infer.main(["--model", str(onnx_model()), "--source", str(video), flag, str(target)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {what}" in err and err.count("\n") == 1


def test_max_frames_must_be_positive(onnx_model, video, capsys):
    assert infer.main(["--model", str(onnx_model()), "--source", str(video), "--max-frames", "-1"]) == 2
    assert "--max-frames -1 must be at least 1" in capsys.readouterr().err
