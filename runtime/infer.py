"""Live inference: a model on a camera, stream, video, image folder or glob, drawn, shown and saved.

    python -m runtime.infer --model student.onnx --source 0 --show
    python -m runtime.infer --model student.int8.cpu.onnx --source clip.mp4 --save out.mp4 --json run.json

Capture, pre-processing, inference and drawing run in their own threads (runtime.pipeline) with bounded
queues; the main thread writes and shows. Live sources drop the oldest frame when inference falls behind
(`--drop-oldest`, default on for cameras and streams, off for files). Ctrl-C (or q / Esc in the window)
stops cleanly: the video file is finalised (written under a temporary name, renamed when complete) and
the summary is printed: frames, FPS and p50/p90/p99 milliseconds per stage.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.backends import Backend, add_backend_options, load_backend
from runtime.errors import Terminated, UserError, cli_main, sigterm_as_interrupt
from runtime.postprocess import colorize, labels_from_output, overlay
from runtime.preprocess import preprocess_for
from runtime.sources import Frame, Source, open_source

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
VISUALIZE = ("overlay", "mask", "side-by-side")
WINDOW = "LFD-Edge"


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'512x1024' (H x W) -> (512, 1024); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise UserError(f"bad size '{text}'; write height x width, e.g. 512x1024")
    return int(m.group(1)), int(m.group(2))


# --- drawing ---------------------------------------------------------------------------------
def visualize(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], mode: str = "overlay",
              alpha: float = 0.5) -> np.ndarray:
    """RGB frame + H x W labels -> RGB picture: the colour overlay, the colour mask, or both side by side."""
    mask = colorize(labels, palette)
    if mode == "mask":
        return mask
    blended = overlay(image, mask, alpha)
    if mode == "side-by-side":
        return np.hstack([image, blended])
    return blended


def draw_text(image: np.ndarray, text: str) -> np.ndarray:
    """Write `text` in the top-left corner, white on a dark outline, scaled to the frame."""
    scale = max(0.4, image.shape[0] / 720.0)
    org = (8, int(24 * scale) + 4)
    thick = max(1, int(round(2 * scale)))
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return image


class RateMeter:
    """Frames per second as an exponential moving average of the interval between calls."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self._last: float | None = None
        self._interval: float | None = None

    def tick(self) -> float:
        now = time.perf_counter()
        if self._last is not None:
            dt = now - self._last
            self._interval = dt if self._interval is None else self.smoothing * self._interval + (1 - self.smoothing) * dt
        self._last = now
        return 1.0 / self._interval if self._interval else 0.0


# --- output ----------------------------------------------------------------------------------
def check_display() -> None:
    """Fail early, before opening any model or camera, when windows cannot be shown."""
    if re.search(r"GUI:\s+NONE", cv2.getBuildInformation()):
        raise UserError("--show needs OpenCV with GUI support, but this is a headless build (cv2.imshow is not "
                        "implemented); pip install opencv-python instead of opencv-python-headless, or use --save")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("--show needs a display but DISPLAY is not set; use ssh -X, or in Docker pass "
                        "-e DISPLAY -v /tmp/.X11-unix:/tmp/.X11-unix, or use --save instead")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise UserError(f"--show cannot open a window ({str(e).strip().splitlines()[-1]}); use --save instead") from e


class Sink:
    """Writes what the pipeline produces: a video file or a folder of pictures (`save`), index PNG masks
    (`masks`), and a window (`show`). A video is written to a temporary name beside the target and renamed
    by `close()`, so that the target is only ever a complete, playable file."""

    def __init__(self, save: str | None = None, masks: str | None = None, show: bool = False,
                 fps: float | None = None) -> None:
        self.save = Path(save) if save else None
        self.masks = Path(masks) if masks else None
        self.show = show
        self.fps = fps if fps and 0 < fps < 1000 else 30.0
        self.count = 0
        self.quit = False
        self._writer: Any = None
        self._tmp: Path | None = None
        self.is_video = self.save is not None and self.save.suffix.lower() in VIDEO_FOURCC
        if self.save is not None and not self.is_video:
            if self.save.suffix:
                raise UserError(f"--save {save}: use a video file ({', '.join(VIDEO_FOURCC)}) or a folder")
            self.save.mkdir(parents=True, exist_ok=True)
        if self.masks is not None:
            self.masks.mkdir(parents=True, exist_ok=True)

    def write(self, frame: Frame, labels: np.ndarray, picture: np.ndarray) -> None:
        bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
        if self.is_video:
            self._video(bgr)
        elif self.save is not None:
            _write_image(self.save / f"{frame.name}.jpg", bgr)
        if self.masks is not None:
            _write_image(self.masks / f"{frame.name}.png", labels.astype(np.uint8))
        if self.show:
            cv2.imshow(WINDOW, bgr)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                self.quit = True
        self.count += 1

    def _video(self, bgr: np.ndarray) -> None:
        assert self.save is not None
        if self._writer is None:
            self.save.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.save.with_name(f".{self.save.stem}.partial{self.save.suffix}")
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.save.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (bgr.shape[1], bgr.shape[0]))
            if not self._writer.isOpened():
                raise UserError(f"cannot write video {self.save}; this OpenCV build lacks the encoder, try .avi")
        self._writer.write(bgr)

    def close(self) -> None:
        """Finalise the video (release, then rename into place) and close the window; safe to call twice."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            assert self._tmp is not None and self.save is not None
            os.replace(self._tmp, self.save)
        if self.show:
            cv2.destroyAllWindows()
            self.show = False


def _write_image(path: Path, image: np.ndarray) -> None:
    from runtime.io import atomic_write_bytes

    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise UserError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes())


# --- the run -------------------------------------------------------------------------------
def build_stages(backend: Backend, size: tuple[int, int] | None, mode: str, alpha: float,
                 show_stats: bool = True) -> list[tuple[str, Any]]:
    """The pipeline's stages: pre-process -> infer -> labels and drawing; each maps one item to the next."""
    info = backend.info
    in_size = size or backend.input_size
    meter = RateMeter()

    def pre(frame: Frame) -> tuple[Frame, np.ndarray]:
        return frame, preprocess_for(info, frame.image, in_size)

    def infer(item: tuple[Frame, np.ndarray]) -> tuple[Frame, np.ndarray, float]:
        frame, batch = item
        out = backend.infer(batch)
        return frame, out, backend.last_ms

    def draw(item: tuple[Frame, np.ndarray, float]) -> tuple[Frame, np.ndarray, np.ndarray]:
        frame, out, infer_ms = item
        labels = labels_from_output(out, frame.image.shape[:2])[0]
        picture = visualize(frame.image, labels, info.palette, mode, alpha)
        fps = meter.tick()
        if show_stats:
            picture = draw_text(np.ascontiguousarray(picture), f"{fps:5.1f} FPS  infer {infer_ms:.1f} ms")
        return frame, labels, picture

    return [("preprocess", pre), ("infer", infer), ("draw", draw)]


def run(backend: Backend, source: Source, sink: Sink, size: tuple[int, int] | None = None, mode: str = "overlay",
        alpha: float = 0.5, max_frames: int | None = None, queue_size: int = 2, drop_oldest: bool | None = None,
        show_stats: bool = True) -> dict[str, Any]:
    """Run the threaded pipeline from `source` through `backend` into `sink`; returns the summary.
    Ctrl-C ends the run cleanly (the summary gets `"interrupted": true`); the sink is always closed."""
    from runtime.pipeline import Pipeline

    drop = source.live if drop_oldest is None else drop_oldest
    frames: Any = source if (max_frames is None or source.live) else itertools.islice(source, max_frames)
    pipe = Pipeline(frames, build_stages(backend, size, mode, alpha, show_stats), queue_size=queue_size,
                    drop_oldest=drop, close=source.close)
    results = pipe.run()
    interrupted = terminated = False
    try:
        with sigterm_as_interrupt():
            for frame, labels, picture in results:
                sink.write(frame, labels, picture)
                if sink.quit or (max_frames is not None and sink.count >= max_frames):
                    break
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): finalise what was written
        interrupted = True
        terminated = isinstance(e, Terminated)
    finally:
        results.close()  # stops and joins the pipeline's threads
        source.close()
        sink.close()
    summary = pipe.summary()
    summary.update({"interrupted": interrupted, "terminated": terminated, "drop_oldest": drop, "queue": queue_size})
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    from runtime.report import format_table

    rows = [{"stage": n, **s} for n, s in summary["stages"].items()] + [{"stage": "end-to-end", **summary["end_to_end"]}]
    print(format_table(rows, ["stage", "n", "p50", "p90", "p99", "mean"],
                       headers=["stage", "calls", "p50 ms", "p90 ms", "p99 ms", "mean ms"]))
    print(f"{summary['frames_out']} frames in {summary['wall_s']:.2f} s = {summary['fps']:.1f} FPS "
          f"({summary['dropped']} dropped{', interrupted' if summary.get('interrupted') else ''})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a .pt checkpoint, an .onnx model or a TensorRT .engine")
    p.add_argument("--source", required=True,
                   help="camera index (0) or /dev/videoN, csi://N (Jetson CSI camera), a video file, an image, "
                        "a folder, a glob ('dir/*.jpg'), an rtsp:// http:// udp:// URL, or a GStreamer pipeline "
                        "ending in appsink")
    p.add_argument("--show", action="store_true", help="show the result in a window (q or Esc quits); needs a "
                   "GUI-capable OpenCV and a display")
    p.add_argument("--save", help="write the drawn result to a video (out.mp4, .avi, .mkv) or, for a path "
                   "without suffix, one JPEG per frame into that folder")
    p.add_argument("--masks", help="folder for one index PNG (class ids) per frame")
    p.add_argument("--visualize", choices=VISUALIZE, default="overlay",
                   help="overlay: colours over the frame; mask: colours only; side-by-side: frame | overlay")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity, 0..1 (default 0.5)")
    p.add_argument("--size", help="network input H x W (e.g. 512x1024); default: the model's own input size")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--drop-oldest", action=argparse.BooleanOptionalAction, default=None,
                   help="drop the oldest waiting frame when inference falls behind (default: on for cameras "
                        "and streams, off for files)")
    p.add_argument("--queue", type=int, default=2, help="capacity of each queue between stages (default 2)")
    add_backend_options(p)
    p.add_argument("--loop", action="store_true", help="start a video file or image folder over at its end")
    p.add_argument("--source-size", help="camera resolution to request, H x W; every frame is resized to it")
    p.add_argument("--source-fps", type=float, help="camera frame rate to request, or the pace to play files at")
    p.add_argument("--no-stats", action="store_true", help="do not draw FPS and latency on the frames")
    p.add_argument("--json", help="write the summary (frames, FPS, per-stage latency, environment) to this file")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha} is outside 0..1")
    if args.queue < 1:
        raise UserError(f"--queue {args.queue} must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames {args.max_frames} must be at least 1")
    check_outputs(args.save, args.masks, args.json)
    if args.show:
        check_display()
    size = parse_size(args.size)
    with load_backend(args.model, args.backend, threads=args.threads, providers=args.providers,
                      device=args.device) as backend:
        source = open_source(args.source, loop=args.loop, size=parse_size(args.source_size), fps=args.source_fps)
        sink = Sink(args.save, args.masks, args.show, fps=source.native_fps)
        print(f"{backend.name}: {args.model} -> {source.kind} {source.name}"
              f"{' (drop-oldest)' if (source.live if args.drop_oldest is None else args.drop_oldest) else ''}; "
              "Ctrl-C stops", file=sys.stderr)
        summary = run(backend, source, sink, size, args.visualize, args.alpha, args.max_frames, args.queue,
                      args.drop_oldest, show_stats=not args.no_stats)
    summary.update({"model": str(args.model), "backend": backend.name, "source": source.name,
                    "outputs": {"save": args.save, "masks": args.masks}})
    print_summary(summary)
    if args.save and sink.count:
        print(f"saved {args.save}")
    if args.json:
        from runtime.report import write_report

        write_report(args.json, summary, threads=args.threads)
        print(f"wrote {args.json}")
    return Terminated.exit_code if summary.get("terminated") else 0


def check_outputs(save: str | None, masks: str | None, json_path: str | None) -> None:
    """Fail before the first frame when an output cannot be written (one sentence naming it)."""
    from runtime.io import check_writable

    suffix = Path(save).suffix.lower() if save else ""
    if save and suffix in VIDEO_FOURCC:
        check_writable(save, "--save video")
    elif save and not suffix:
        check_writable(save, "--save folder", folder=True)
    check_writable(masks, "--masks folder", folder=True)
    check_writable(json_path, "--json file")


if __name__ == "__main__":
    raise SystemExit(main())
