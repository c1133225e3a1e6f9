"""A threaded pipeline: a source thread, one thread per stage, bounded queues between them, and the
caller's thread consuming the results, so that the slowest stage sets the pace and the others overlap.

    source -> [q0] -> stage 1 -> [q1] -> stage 2 -> ... -> [qN] -> run() yields to the caller

Queues hold at most `queue_size` items; a full queue blocks its producer (back-pressure), except the
first one with `drop_oldest=True`, where the source thread discards the oldest waiting frame instead:
a live camera then always feeds the freshest frame and never builds a backlog (counted in `dropped`).
With `max_in_flight=N` (files: they can be read
faster than processed), the source reads a frame only while fewer than N are between it and the caller, so
no backlog builds up in the queues and the end-to-end latency is the processing time, not queueing time.
A stage given as a list of N functions runs in N threads, one per function (e.g. one per inference
request of a backend, runtime.infer --throughput): the threads take items in arrival order, work on up to N
at once, and a reorder buffer keyed by arrival index passes the results on in that same order.
A stage returning None drops that item. An exception in any thread stops the pipeline and is
re-raised in the caller; `stop()` (or leaving the `run()` loop, Ctrl-C included) ends every thread.
Per-stage and end-to-end times (ms), and each stage thread's CPU time (ms, `time.thread_time`), are kept
for `summary()`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

from runtime.report import latency_summary

_END = object()
_SKIP = object()  # a parallel stage's dropped item, kept in the reorder buffer so that order stays intact
_POLL_S = 0.05

StageFn = Callable[[Any], Any]


class _Ordered:
    """The shared state of one parallel stage: which arrival index the next taken item gets, the reorder
    buffer (arrival index -> result) and the next index to pass on, how many of its threads still run."""

    def __init__(self, workers: int) -> None:
        self.take = threading.Lock()  # held while a thread takes an item and numbers it
        self.emit = threading.Lock()  # held while results enter the buffer and leave it in order
        self.taken = 0
        self.next_out = 0
        self.buffer: dict[int, Any] = {}
        self.ended = False
        self.alive = workers


class Pipeline:
    def __init__(self, source: Iterable[Any], stages: Sequence[tuple[str, StageFn | Sequence[StageFn]]],
                 queue_size: int = 2, drop_oldest: bool = False, source_name: str = "capture",
                 close: Callable[[], None] | None = None, max_in_flight: int | None = None) -> None:
        """`stages`: (name, function) pairs, or (name, [function, ...]) for a stage that runs one thread per
        function and keeps the order (see the module doc); `close`: what stops the source (default: its own
        `close()`), called by `stop()` so that a blocked read returns."""
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.source = source
        self.stages = list(stages)
        self.queue_size = queue_size
        self.drop_oldest = drop_oldest
        self._close = close if close is not None else getattr(source, "close", None)
        self.source_name = source_name
        # lists appended to from several threads of a parallel stage (list.append is atomic)
        self.times: dict[str, list[float]] = {source_name: [], **{n: [] for n, _ in self.stages}}
        self.cpu: dict[str, list[float]] = {source_name: [], **{n: [] for n, _ in self.stages}}
        self._slots = threading.Semaphore(max_in_flight) if max_in_flight else None
        self.max_in_flight = max_in_flight
        self.end_to_end: list[float] = []
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._t_start = self._t_last = 0.0

    # --- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask every thread to end (idempotent); the source is closed so that a blocked read returns."""
        self._stop.set()
        if callable(self._close):
            self._close()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def workers(self) -> dict[str, int]:
        """Threads per stage (1, or the number of functions of a parallel stage)."""
        return {name: 1 if callable(fn) else len(fn) for name, fn in self.stages}

    def run(self) -> Generator[Any, None, None]:
        """Start the threads and yield the last stage's outputs in order until the source ends."""
        queues: list[queue.Queue[Any]] = [queue.Queue(self.queue_size) for _ in range(len(self.stages) + 1)]
        self._threads = [threading.Thread(target=self._source_loop, args=(queues[0],), name=self.source_name,
                                          daemon=True)]
        for i, (name, fn) in enumerate(self.stages):
            qin, qout = queues[i], queues[i + 1]
            if callable(fn):
                self._threads.append(threading.Thread(target=self._stage_loop, args=(name, fn, qin, qout),
                                                      name=name, daemon=True))
                continue
            if not fn:
                raise ValueError(f"stage {name} has no functions")
            state = _Ordered(len(fn))
            self._threads += [threading.Thread(target=self._parallel_loop, args=(name, f, qin, qout, state),
                                               name=f"{name}-{j}", daemon=True) for j, f in enumerate(fn)]
        self._t_start = self._t_last = time.perf_counter()
        for t in self._threads:
            t.start()
        try:
            while True:
                env = self._get(queues[-1])
                if env is _END:
                    break
                t_cap, item = env
                now = time.perf_counter()
                self.end_to_end.append((now - t_cap) * 1e3)
                self.frames_out += 1
                self._release()
                self._t_last = now
                yield item
        finally:
            self.stop()
            for t in self._threads:
                t.join(timeout=2.0)  # a read blocked inside a driver is left behind (daemon thread)
        if self._error is not None:
            raise self._error

    # --- threads ---------------------------------------------------------------------------
    def _source_loop(self, q: queue.Queue[Any]) -> None:
        it = iter(self.source)
        try:
            while not self._stop.is_set():
                if not self._acquire():
                    break
                t0, c0 = time.perf_counter(), time.thread_time()
                try:
                    item = next(it)
                except StopIteration:
                    break
                now = time.perf_counter()
                self.times[self.source_name].append((now - t0) * 1e3)
                self.cpu[self.source_name].append((time.thread_time() - c0) * 1e3)
                self.frames_in += 1
                if not self._put(q, (now, item), self.drop_oldest):
                    break
        except BaseException as e:  # re-raised in the caller's thread by run()
            self._fail(e)
        finally:
            self._put_end(q)

    def _timed(self, name: str, fn: Callable[[Any], Any], item: Any) -> Any:
        """`fn(item)`, its wall and thread CPU milliseconds recorded under stage `name`."""
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn(item)
        self.times[name].append((time.perf_counter() - t0) * 1e3)
        self.cpu[name].append((time.thread_time() - c0) * 1e3)
        return out

    def _stage_loop(self, name: str, fn: Callable[[Any], Any], qin: queue.Queue[Any], qout: queue.Queue[Any]) -> None:
        try:
            while True:
                env = self._get(qin)
                if env is _END:
                    break
                t_cap, item = env
                out = self._timed(name, fn, item)
                if out is None:
                    self._release()
                elif not self._put(qout, (t_cap, out), False):
                    break
        except BaseException as e:  # re-raised in the caller's thread by run()
            self._fail(e)
        finally:
            self._put_end(qout)

    def _parallel_loop(self, name: str, fn: StageFn, qin: queue.Queue[Any], qout: queue.Queue[Any],
                       state: _Ordered) -> None:
        """One thread of a parallel stage: take the next item and its arrival index, run `fn` on it, and
        put the result into the reorder buffer, which passes on every result whose turn has come. The
        last thread to end passes on the end marker."""
        try:
            while True:
                with state.take:
                    env: Any = _END if state.ended else self._get(qin)
                    if env is _END:
                        state.ended = True
                        break
                    index = state.taken
                    state.taken += 1
                t_cap, item = env
                out = self._timed(name, fn, item)
                if out is None:
                    self._release()
                if not self._emit(state, index, _SKIP if out is None else (t_cap, out), qout):
                    break
        except BaseException as e:  # re-raised in the caller's thread by run()
            self._fail(e)
        finally:
            with state.emit:
                state.alive -= 1
                last = state.alive == 0
            if last:
                self._put_end(qout)

    def _emit(self, state: _Ordered, index: int, env: Any, qout: queue.Queue[Any]) -> bool:
        """Buffer `env` under its arrival `index`, then pass on, in order, every result whose turn has
        come (a dropped item, _SKIP, just takes its turn). False once stopped."""
        with state.emit:
            state.buffer[index] = env
            while state.next_out in state.buffer:
                ready = state.buffer.pop(state.next_out)
                state.next_out += 1
                if ready is not _SKIP and not self._put(qout, ready, False):
                    return False
        return True

    def _fail(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e
        self._stop.set()

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    def _put(self, q: queue.Queue[Any], env: Any, drop_oldest: bool) -> bool:
        """Put `env`; with `drop_oldest`, make room by discarding the oldest item. False once stopped."""
        while not self._stop.is_set():
            if drop_oldest:
                try:
                    q.put_nowait(env)
                    return True
                except queue.Full:
                    try:
                        q.get_nowait()
                        self.dropped += 1
                        self._release()
                    except queue.Empty:
                        pass
                    continue
            try:
                q.put(env, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _acquire(self) -> bool:
        """Wait for an in-flight slot (when limited); False once stopped."""
        if self._slots is None:
            return True
        while not self._stop.is_set():
            if self._slots.acquire(timeout=_POLL_S):
                return True
        return False

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def _put_end(self, q: queue.Queue[Any]) -> None:
        """Deliver the end marker even to a full queue (discarding items once the pipeline is stopping)."""
        while True:
            try:
                q.put(_END, timeout=_POLL_S)
                return
            except queue.Full:
                if self._stop.is_set():
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass

    # --- results ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Frames in/out/dropped, wall time, output FPS, threads per stage, and p50/p90/p99 ms per stage and
        end to end."""
        wall = max(self._t_last - self._t_start, 1e-9)
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "wall_s": wall,
            "fps": self.frames_out / wall if self.frames_out else 0.0,
            "workers": self.workers,
            "stages": {name: latency_summary(ms) for name, ms in self.times.items()},
            "stage_cpu_ms": {name: (sum(ms) / len(ms) if ms else 0.0) for name, ms in self.cpu.items()},
            "end_to_end": latency_summary(self.end_to_end),
        }
