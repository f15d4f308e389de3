"""Prometheus metrics on request (``perception run --metrics 127.0.0.1:9108``, needs ``prometheus-client``).

Counters and latency histograms per stream, read from the pipeline's shared counters when Prometheus
scrapes (nothing is pushed; the stages only increment integers in shared memory):

* ``perception_frames_total{stream, stage}``: frames captured, inferred, published;
* ``perception_dropped_total{stream, reason}``: ``capture``/``post`` (a newer live frame), ``stale``
  (older than ``runtime.max_age_ms``), ``source`` (the grabber), ``reader_behind`` (a reader's full queue);
* ``perception_skipped_total{stream}``, ``perception_reconnects_total{stream}``,
  ``perception_restarts_total`` (all restarts of the run);
* ``perception_stage_latency_seconds{stream, stage}``: histograms of ``capture`` (into its slot),
  ``inference``, ``post`` (post-processing) and ``total`` (capture to publish), written by the
  post-processing stage into :data:`LATENCY_BUCKETS_S` buckets;
* ``perception_stage_silent_seconds{stage}``: seconds since inference's and post-processing's loops last
  went round (the watchdog's view).
"""

from __future__ import annotations

import bisect
import time
from typing import Any

from perception.errors import ConfigError
from perception.runtime import stagekit

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
"""Upper bounds of the latency histogram buckets, seconds (``+Inf`` follows)."""
HIST_STAGES = ("capture", "inference", "post", "total")
_SLOTS = len(LATENCY_BUCKETS_S) + 2  # buckets, +Inf, sum in microseconds


def hist_size(max_streams: int) -> int:
    """Length of the shared int64 array that holds every stream's histograms."""
    return max_streams * len(HIST_STAGES) * _SLOTS


def observe(hist: Any, row: int, timings_ms: dict[str, float], total_ms: float) -> None:
    """Post-processing: add one frame's stage times (ms) to its stream's histograms."""
    values = {"capture": timings_ms.get("capture"), "inference": timings_ms.get("inference"),
              "post": timings_ms.get("post"), "total": total_ms}
    for i, stage in enumerate(HIST_STAGES):
        ms = values[stage]
        if ms is None:
            continue
        base = (row * len(HIST_STAGES) + i) * _SLOTS
        hist[base + bisect.bisect_left(LATENCY_BUCKETS_S, ms / 1000)] += 1
        hist[base + _SLOTS - 1] += int(ms * 1000)


class PipelineCollector:
    """A Prometheus collector over a running pipeline's shared counters (see the module docstring)."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        frames = CounterMetricFamily("perception_frames", "Frames through each stage", labels=["stream", "stage"])
        dropped = CounterMetricFamily("perception_dropped", "Frames dropped, by reason", labels=["stream", "reason"])
        skipped = CounterMetricFamily("perception_skipped", "Frames the source could not decode", labels=["stream"])
        reconnects = CounterMetricFamily("perception_reconnects", "Live inputs opened again", labels=["stream"])
        latency = HistogramMetricFamily("perception_stage_latency_seconds", "Per-frame time in each stage",
                                        labels=["stream", "stage"])
        for stream in self.run.streams.active():
            c = stagekit.read_counters(self.run.counters, stream.row)
            cam = stream.camera_id
            for stage, key in (("capture", "captured"), ("inference", "inferred"), ("publish", "published")):
                frames.add_metric([cam, stage], c[key])
            for reason, key in (("capture", "dropped_capture"), ("post", "dropped_post"), ("stale", "dropped_stale"),
                                ("source", "source_dropped"), ("reader_behind", "dropped_publish")):
                dropped.add_metric([cam, reason], c[key])
            skipped.add_metric([cam], c["skipped"])
            reconnects.add_metric([cam], c["reconnects"])
            self._histograms(latency, stream)
        yield from (frames, dropped, skipped, reconnects, latency)
        restarts = CounterMetricFamily("perception_restarts", "Stages started again (watchdog or crash)")
        restarts.add_metric([], self.run.p.restarts.total)
        yield restarts
        silent = GaugeMetricFamily("perception_stage_silent_seconds", "Seconds since the stage's loop went round",
                                   labels=["stage"])
        now = time.monotonic_ns()
        for stage, i in (("inference", 0), ("postprocess", 1)):
            beat = int(self.run.beats[i])
            silent.add_metric([stage], (now - beat) / 1e9 if beat else 0.0)
        yield silent

    def _histograms(self, family, stream) -> None:
        hist = self.run.hist
        for i, stage in enumerate(HIST_STAGES):
            base = (stream.row * len(HIST_STAGES) + i) * _SLOTS
            counts = [int(hist[base + k]) for k in range(_SLOTS - 1)]
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), counts):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            family.add_metric([stream.camera_id, stage], buckets, int(hist[base + _SLOTS - 1]) / 1e6)


def serve(run: Any, address: str):
    """Start the HTTP endpoint Prometheus scrapes (``HOST:PORT``); returns the server, to shut down."""
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError as exc:
        raise ConfigError("--metrics needs prometheus-client: pip install 'perception[metrics]'") from exc
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--metrics: expected HOST:PORT such as 127.0.0.1:9108, got {address!r}")
    registry = CollectorRegistry()
    registry.register(PipelineCollector(run))
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics: cannot listen on {address}: {exc.strerror}") from exc
    return server
