"""Live inference: a model on a camera, stream, video, image folder or glob, drawn, shown and saved.

    python -m runtime.infer --model student.onnx --source 0 --show
    python -m runtime.infer --model student.int8.cpu.onnx --source clip.mp4 --save out.mp4 --json run.json

Capture, pre-processing, inference and drawing run in their own threads (runtime.pipeline) with bounded
queues; the main thread writes and shows. Live sources drop the oldest frame when inference falls behind
(`--drop-oldest`, default on for cameras and streams, off for files). Ctrl-C (or q / Esc in the window)
stops cleanly: the video file is finalised (written under a temporary name, renamed when complete) and
the summary is printed: frames, FPS and p50/p90/p99 milliseconds per stage.

Latency mode (the default, for every source): one inference at a time, each frame through as soon as
possible. `--throughput` (recorded files only: a video, an image, a folder or a glob) keeps several
inferences in flight to maximise frames per second, e.g. to process a recording:

    python -m runtime.infer --model student.openvino.xml --source clip.mp4 --throughput --save out.mp4

OpenVINO compiles with the THROUGHPUT hint and runs its OPTIMAL_NUMBER_OF_INFER_REQUESTS requests; ONNX
Runtime runs one session per request, the threads (--threads, else the cores) split between them;
TensorRT and PyTorch run one at a time (latency mode, with a note). Frames leave in their order. A live
source with --throughput is refused: a camera wants its freshest frame soon, not more frames in flight.
The summary gives frames/s, the requests in flight and the CPU use (process CPU time / wall time).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.backends import Backend, load_backend
from runtime.cli import add_backend_options, backend_options, int_at_least, parse_size
from runtime.errors import Terminated, UserError, cli_main, sigterm_as_interrupt
from runtime.machine import usable_cores
from runtime.postprocess import FILTERS, Painter, colorize, overlay, resize_labels
from runtime.preprocess import Preprocessor, dummy_batch
from runtime.sources import Frame, Source, classify_source, open_source

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
VISUALIZE = ("overlay", "mask", "side-by-side", "raw")
WINDOW = "LFD-Edge"
# sources that deliver frames whether or not anyone reads them (runtime.sources.classify_source)
LIVE_KINDS = ("camera", "csi", "gstreamer", "stream")


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
    """Write `text` once in the top-left corner: white on a filled dark box, scaled to the frame (a box, not
    an outline drawn under the text, so no edge of another glyph shows through after compression)."""
    scale = max(0.45, image.shape[0] / 720.0)
    thick = max(1, int(round(1.5 * scale)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, int(4 * scale))
    cv2.rectangle(image, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (20, 20, 20), cv2.FILLED)
    cv2.putText(image, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                cv2.LINE_AA)
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
        if self.masks is not None:  # `labels` may be at the model's size: masks are at the frame's
            full = resize_labels(labels, frame.image.shape[:2])
            _write_image(self.masks / f"{frame.name}.png", full.astype(np.uint8))
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
            fourcc = cv2.VideoWriter.fourcc(*VIDEO_FOURCC[self.save.suffix.lower()])
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
                 show_stats: bool = True, filter: str = "nearest", queue_size: int = 2, requests: int = 1
                 ) -> list[tuple[str, Any]]:
    """The pipeline's stages: pre-process -> infer -> labels and drawing; each maps one item to the next.
    With `requests` > 1 (open on the backend: Backend.open_requests), inference is a parallel stage of one
    function per request, which runtime.pipeline runs in as many threads and keeps in frame order.

    Drawing uses the fast path (runtime.postprocess.Painter: arg-max at the model's output size, then the
    labels or, with filter="linear", the colour mask resized to the frame); the labels passed on are at the
    model's output size. Every output kind draws this way: native-stride labels (export.onnx --output
    native-labels) are coloured at the model's stride and resized with nearest (INTER_NEAREST_EXACT). Buffers are reused in rings deeper than the frames that can be in flight."""
    info = backend.info
    in_size = size or backend.input_size
    meter = RateMeter()
    ring = 2 * queue_size + 4 + requests  # items in the queues after a stage, plus those being worked on
    prep = Preprocessor(info, in_size, buffers=ring)
    painter = Painter(info.palette, mode, alpha, filter, buffers=ring)

    def pre(frame: Frame) -> tuple[Frame, np.ndarray]:
        return frame, prep(frame.image)

    def infer(item: tuple[Frame, np.ndarray]) -> tuple[Frame, np.ndarray, float]:
        frame, batch = item
        out = backend.infer(batch)
        return frame, out, backend.last_ms

    def infer_on(request: int) -> Callable[[tuple[Frame, np.ndarray]], tuple[Frame, np.ndarray, float]]:
        def infer(item: tuple[Frame, np.ndarray]) -> tuple[Frame, np.ndarray, float]:
            frame, batch = item
            t0 = time.perf_counter()  # not backend.last_ms: the other requests' calls overwrite it
            out = backend.infer(batch, request)
            return frame, out, (time.perf_counter() - t0) * 1e3

        return infer

    def draw(item: tuple[Frame, np.ndarray, float]) -> tuple[Frame, np.ndarray, np.ndarray]:
        frame, out, infer_ms = item
        fps = meter.tick()
        if mode == "raw":  # the frame as captured, nothing drawn on it: footage to distil on (train data.unlabeled)
            return frame, painter.labels(out), frame.image
        labels, picture = painter.paint(frame.image, out)
        if show_stats:
            draw_text(picture, f"{fps:5.1f} FPS  infer {infer_ms:.1f} ms")
        return frame, labels, picture

    inference: Any = infer if requests == 1 else [infer_on(i) for i in range(requests)]
    return [("preprocess", pre), ("infer", inference), ("draw", draw)]


def backend_alone(backend: Backend, size: tuple[int, int] | None, seconds: float = 1.0, warmup: int = 3,
                  requests: int = 1) -> dict[str, float]:
    """The backend's own speed on this machine, measured in the same run: `warmup` untimed calls, then
    calls on one input for about `seconds`; p50 ms and FPS. With `requests` > 1 (open on the backend),
    one thread per request calls it at once, and FPS is all calls over the wall time."""
    from runtime.report import latency_summary

    batch = dummy_batch(backend.info, size or backend.input_size)
    if requests > 1:
        timed, wall = _calls_in_parallel(backend, batch, requests, seconds, warmup)
        return {"p50_ms": latency_summary(timed)["p50"], "fps": len(timed) / wall if wall > 0 else 0.0,
                "calls": len(timed), "requests": requests}
    for _ in range(warmup):
        backend.infer(batch)
    ms: list[float] = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(ms) < 5:
        backend.infer(batch)
        ms.append(backend.last_ms)
    lat = latency_summary(ms)
    return {"p50_ms": lat["p50"], "fps": 1e3 / lat["p50"] if lat["p50"] else 0.0, "calls": len(ms)}


def _calls_in_parallel(backend: Backend, batch: np.ndarray, requests: int, seconds: float, warmup: int
                       ) -> tuple[list[float], float]:
    """Each of `requests` threads calls its own request `warmup` times, then all call for about `seconds`
    from a common start; every timed call's ms, and the wall time from that start to the last call's end."""
    import threading

    t_start = [0.0]
    start = threading.Barrier(requests, action=lambda: t_start.__setitem__(0, time.perf_counter()))
    ms: list[list[float]] = [[] for _ in range(requests)]
    errors: list[BaseException] = []

    def calls(request: int) -> None:
        try:
            for _ in range(warmup):
                backend.infer(batch, request)
            start.wait()
            while not errors and (time.perf_counter() - t_start[0] < seconds or len(ms[request]) < 5):
                t0 = time.perf_counter()
                backend.infer(batch, request)
                ms[request].append((time.perf_counter() - t0) * 1e3)
        except threading.BrokenBarrierError:  # another thread failed: its error is the one to report
            pass
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=calls, args=(i,), daemon=True) for i in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [m for per in ms for m in per], time.perf_counter() - t_start[0]


def run(backend: Backend, source: Source, sink: Sink, size: tuple[int, int] | None = None, mode: str = "overlay",
        alpha: float = 0.5, max_frames: int | None = None, queue_size: int = 2, drop_oldest: bool | None = None,
        show_stats: bool = True, filter: str = "nearest", realtime: bool = False, throughput: bool = False
        ) -> dict[str, Any]:
    """Run the threaded pipeline from `source` through `backend` into `sink`; returns the summary.

    A file is read no faster than it is processed (at most one frame per stage in flight), so the reported
    end-to-end latency is processing, not queueing; with `realtime`, a file is paced at its own frame rate
    and drops the oldest frame when processing falls behind, as a camera would. With `throughput` (a file,
    not `realtime`), inference runs on every request open on the backend at once (`backend.requests`,
    Backend.open_requests), frames still leave in order, and a file is read at most two frames per request
    ahead of the writer. The summary's `mode`, `requests` and `cpu_use` (process CPU time / wall time, in cores) say
    how it ran. Ctrl-C or SIGTERM ends the run cleanly (the summary gets `"interrupted": true`); the sink is
    always closed."""
    from runtime.pipeline import Pipeline

    if throughput:
        check_throughput(source.kind, source.name, source.live, realtime)
    requests = backend.requests if throughput else 1
    if realtime and not source.live:
        source.fps = source.fps or source.native_fps or 30.0
    paced_live = source.live or realtime
    drop = paced_live if drop_oldest is None else drop_oldest
    frames: Any = source if (max_frames is None or source.live) else itertools.islice(source, max_frames)
    stages = build_stages(backend, size, mode, alpha, show_stats, filter, queue_size, requests)
    # one frame per stage plus the one being written; in throughput mode, as many again as requests are
    # open, so that each request finds its next frame ready
    in_flight = len(stages) + 1 if requests == 1 else len(stages) + 2 * requests
    pipe = Pipeline(frames, stages, queue_size=queue_size, drop_oldest=drop, close=source.close,
                    max_in_flight=None if paced_live else in_flight)
    results = pipe.run()
    interrupted = terminated = False
    write_ms: list[float] = []
    write_cpu: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        with sigterm_as_interrupt():
            for frame, labels, picture in results:
                t0, c0 = time.perf_counter(), time.thread_time()
                sink.write(frame, labels, picture)
                write_ms.append((time.perf_counter() - t0) * 1e3)
                write_cpu.append((time.thread_time() - c0) * 1e3)
                if sink.quit or (max_frames is not None and sink.count >= max_frames):
                    break
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): finalise what was written
        interrupted = True
        terminated = isinstance(e, Terminated)
    finally:
        results.close()  # stops and joins the pipeline's threads
        source.close()
        sink.close()
    process_cpu_ms = (time.process_time() - cpu0) * 1e3
    run_wall_s = max(time.perf_counter() - wall0, 1e-9)
    summary = pipe.summary()
    from runtime.report import latency_summary

    summary["stages"]["write"] = latency_summary(write_ms)
    summary["stage_cpu_ms"]["write"] = sum(write_cpu) / len(write_cpu) if write_cpu else 0.0
    summary.update({"interrupted": interrupted, "terminated": terminated, "drop_oldest": drop, "queue": queue_size,
                    "realtime": realtime, "filter": filter, "mode": "throughput" if requests > 1 else "latency",
                    "requests": requests, **cpu_budget(summary, process_cpu_ms),
                    "cpu_s": process_cpu_ms / 1e3, "cpu_use": process_cpu_ms / 1e3 / run_wall_s})
    return summary


def check_throughput(kind: str, name: str, live: bool, realtime: bool) -> None:
    """Refuse --throughput, in one sentence, for a live source (`kind` camera, csi, gstreamer, stream) or a
    file played with --realtime: both want each frame soon, and more frames in flight only delay them."""
    if live or kind in LIVE_KINDS:
        raise UserError(f"--throughput is for recorded files (a video, an image, a folder or a glob), but {name} is "
                        f"a live {kind} source, which wants its freshest frame soon rather than more frames in "
                        f"flight; drop --throughput (latency mode)")
    if realtime:
        raise UserError("--throughput and --realtime contradict each other (--realtime plays the file as a camera, "
                        "in latency mode, dropping frames; --throughput processes every frame as fast as it can); "
                        "drop one of them")


def cpu_budget(summary: dict[str, Any], process_cpu_ms: float) -> dict[str, Any]:
    """CPU per frame and the frame-rate ceiling it implies: `cores x 1000 / CPU ms per frame`. Stage
    threads are timed with their own CPU clocks; what the process spent beyond them (the inference
    library's worker threads, the interpreter) is `other`."""
    frames = max(1, summary["frames_out"])
    per_frame = process_cpu_ms / frames
    stages = dict(summary["stage_cpu_ms"])
    stages["other"] = max(0.0, per_frame - sum(stages.values()))
    cores = usable_cores()
    return {"cpu_ms_per_frame": per_frame, "cpu_ms_by_stage": stages, "cores": cores,
            "cpu_ceiling_fps": cores * 1000.0 / per_frame if per_frame > 0 else None}


def print_summary(summary: dict[str, Any]) -> None:
    from runtime.report import format_table

    cpu = summary.get("cpu_ms_by_stage", {})
    rows = [{"stage": n, **s, "cpu": cpu.get(n)} for n, s in summary["stages"].items()]
    if "other" in cpu:
        rows.append({"stage": "other threads", "cpu": cpu["other"]})
    rows.append({"stage": "end-to-end", **summary["end_to_end"], "cpu": summary.get("cpu_ms_per_frame")})
    print(format_table(rows, ["stage", "n", "p50", "p90", "p99", "mean", "cpu"],
                       headers=["stage", "calls", "p50 ms", "p90 ms", "p99 ms", "mean ms", "CPU ms/frame"]))
    line = (f"{summary['frames_out']} frames in {summary['wall_s']:.2f} s = {summary['fps']:.1f} FPS "
            f"({summary['dropped']} dropped{', interrupted' if summary.get('interrupted') else ''})")
    if "requests" in summary:
        line += (f"; {summary.get('mode', 'latency')} mode, {summary['requests']} "
                 f"request{'s' if summary['requests'] != 1 else ''} in flight")
    if summary.get("cpu_use") is not None:
        line += f"; CPU use {summary['cpu_use']:.2f} of {summary.get('cores', usable_cores())} cores"
    alone = summary.get("backend_alone")
    if alone:
        line += f"; the backend alone: {alone['fps']:.1f} FPS ({100 * summary['fps_ratio']:.0f} % of it reached)"
    if summary.get("cpu_ceiling_fps"):
        line += f"; CPU ceiling {summary['cpu_ceiling_fps']:.1f} FPS on {summary['cores']} cores"
    print(line)


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
                   help="overlay: colours over the frame; mask: colours only; side-by-side: frame | overlay; raw: the "
                        "frame as captured, with nothing drawn (--save raw records footage for data.unlabeled)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity, 0..1 (default 0.5)")
    p.add_argument("--size", help="network input H x W (e.g. 512x1024); default: the model's own input size")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--drop-oldest", action=argparse.BooleanOptionalAction, default=None,
                   help="drop the oldest waiting frame when inference falls behind (default: on for cameras "
                        "and streams, off for files)")
    p.add_argument("--queue", type=int, default=2, help="capacity of each queue between stages (default 2)")
    p.add_argument("--throughput", action="store_true",
                   help="frames per second instead of latency, for recorded files (a video, an image, a folder or "
                        "a glob; refused for cameras and streams, and with --realtime): several inferences in "
                        "flight, frames still written in order. OpenVINO compiles with the THROUGHPUT hint and "
                        "runs its OPTIMAL_NUMBER_OF_INFER_REQUESTS; ONNX Runtime runs one session per request, "
                        "--threads (default: the cores) split between them; TensorRT and PyTorch run one at a "
                        "time (latency mode, with a note). Without it every source, files included and with or "
                        "without --show, runs in latency mode: one inference at a time")
    p.add_argument("--requests", type=int_at_least(1), metavar="N",
                   help="with --throughput, the inferences in flight (default: OpenVINO's optimal number; ONNX "
                        "Runtime: one per core on the CPU, at most 8, and 2 on a GPU)")
    add_backend_options(p)
    p.add_argument("--loop", action="store_true", help="start a video file or image folder over at its end")
    p.add_argument("--source-size", help="camera resolution to request, H x W; every frame is resized to it")
    p.add_argument("--source-fps", type=float, help="camera frame rate to request, or the pace to play files at")
    p.add_argument("--realtime", action="store_true",
                   help="play a file at its own frame rate, as a camera delivers, and drop the oldest frame when "
                        "processing falls behind (default: a file is read as fast as it is processed, no drops)")
    p.add_argument("--filter", choices=FILTERS, default="nearest",
                   help="how the labels reach the frame's size for drawing: nearest (the label map, fast) or linear "
                        "(the colour mask bilinearly: smooth edges). Drawing arg-maxes at the model's output size; "
                        "runtime.eval keeps the exact definition (logits upsampled, then arg-max), so mIoU is "
                        "unaffected")
    p.add_argument("--measure-backend", type=float, default=1.0, metavar="SECONDS",
                   help="time the backend alone for this long before the stream starts and report end-to-end FPS "
                        "as a share of it (default 1; 0 skips)")
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
    if args.measure_backend < 0:
        raise UserError(f"--measure-backend {args.measure_backend} must be 0 or more seconds")
    if args.requests is not None and not args.throughput:
        raise UserError(f"--requests {args.requests} needs --throughput (latency mode runs one inference at a "
                        f"time); add --throughput or drop --requests")
    if args.throughput:  # before the model loads: a camera is refused in one sentence
        check_throughput(classify_source(args.source), args.source, False, args.realtime)
    size = parse_size(args.size)
    # Threads: the library's default (one per physical core), with idle threads that sleep instead of
    # spinning, so that capture, drawing and writing get the cores between inference calls. Measured on
    # 2 cores (docs/runtime.md): 2 non-spinning threads beat 1 thread by 9 % (INT8 192x384) to 42 %
    # (FP32 512x1024) end to end.
    threads = args.threads
    opts = {**backend_options(args), "threads": threads}
    if args.throughput:
        opts.update(performance_hint=args.ov_hint or "throughput", num_requests=args.requests)
    with load_backend(args.model, args.backend, **opts, spinning=False) as backend:
        backend.run_size(size)  # a static model given another --size: one sentence, before the source opens
        throughput = args.throughput and open_throughput(backend, args.requests)
        requests = backend.requests if throughput else 1
        alone = backend_alone(backend, size, args.measure_backend, requests=requests) \
            if args.measure_backend > 0 else None
        source = open_source(args.source, loop=args.loop, size=parse_size(args.source_size), fps=args.source_fps)
        sink = Sink(args.save, args.masks, args.show, fps=source.native_fps)
        drops = (source.live or args.realtime) if args.drop_oldest is None else args.drop_oldest
        print(f"{backend.name}: {args.model} -> {source.kind} {source.name}"
              f"{' (realtime)' if args.realtime else ''}{' (drop-oldest)' if drops else ''}"
              f"{f' (throughput, {requests} requests)' if throughput else ''}; Ctrl-C stops", file=sys.stderr)
        summary = run(backend, source, sink, size, args.visualize, args.alpha, args.max_frames, args.queue,
                      args.drop_oldest, show_stats=not args.no_stats, filter=args.filter, realtime=args.realtime,
                      throughput=throughput)
    summary["threads"] = threads
    if alone is not None:
        summary["backend_alone"] = alone
        summary["fps_ratio"] = summary["fps"] / alone["fps"] if alone["fps"] else None
    summary.update({"model": str(args.model), "backend": backend.name, "output": backend.output, "source": source.name,
                    "outputs": {"save": args.save, "masks": args.masks}})
    print_summary(summary)
    if args.save and sink.count:
        print(f"saved {args.save}")
    if args.json:
        from runtime.report import write_report

        write_report(args.json, summary, threads=args.threads)
        print(f"wrote {args.json}")
    return Terminated.exit_code if summary.get("terminated") else 0


def open_throughput(backend: Backend, requests: int | None) -> bool:
    """Open `requests` inference requests on `backend` (None: its own choice); True when more than one is
    open. A backend that runs one at a time (TensorRT, PyTorch) gets a one-line note, not an error: the
    run continues in latency mode."""
    count = backend.open_requests(requests)
    if count == 1 and requests != 1:
        print(f"note: the {backend.name} backend runs one inference at a time here, so --throughput runs in "
              f"latency mode", file=sys.stderr)
    return count > 1


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
