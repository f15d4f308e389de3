"""Live inputs survive outages: a real server on 127.0.0.1 is killed and started again on the same port.

RTSP uses GStreamer's RTSP server (:mod:`tests.sources.rtsp_server`; skipped where it is not installed),
HTTP the MJPEG server of :mod:`tests.sources.mjpeg_server`. ``PERCEPTION_TEST_OUTAGE_S`` sets the
outage (default 3 s; the figure in the notes is 60 s, run once by hand with the default backoff:
``PERCEPTION_TEST_OUTAGE_S=60 PERCEPTION_TEST_DEFAULT_BACKOFF=1 pytest tests/sources/test_reconnect.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import pytest

from perception.sources import StreamSource
from perception.sources.grabber import ReconnectPolicy
from perception.sources.health import SourceState
from tests.sources.mjpeg_server import MjpegServer, closed_port
from tests.sources.rtsp_server import RtspServer, rtsp_server_missing

OUTAGE_S = float(os.environ.get("PERCEPTION_TEST_OUTAGE_S", "3"))
POLICY = (ReconnectPolicy() if os.environ.get("PERCEPTION_TEST_DEFAULT_BACKOFF")
          else ReconnectPolicy(initial_delay_s=0.1, max_delay_s=0.5))
RECOVERY_S = 2.0
"""Frames must flow again within this long of the server's return, plus one backoff step."""

log = logging.getLogger(__name__)


@dataclass
class Watch:
    """Consumes a source in a thread, recording when each frame came and every state the source was in."""

    source: StreamSource
    frame_times: list[float] = field(default_factory=list)
    states: list[SourceState] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._threads = [threading.Thread(target=self._consume, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]
        for t in self._threads:
            t.start()

    def _consume(self) -> None:
        try:
            for _meta, _frame in self.source:
                self.frame_times.append(time.monotonic())
                if self._stop.is_set():
                    return
        except BaseException as exc:
            self.error = exc

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            state = self.source.state
            if not self.states or self.states[-1] is not state:
                self.states.append(state)

    def frames_after(self, t: float) -> list[float]:
        return [x for x in self.frame_times if x > t]

    def wait_frames_after(self, t: float, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            after = self.frames_after(t)
            if after:
                return after[0]
            time.sleep(0.01)
        return None

    def stop(self) -> None:
        self._stop.set()
        self.source.close()
        for t in self._threads:
            t.join(5)


def _survive_outage(make_server, kill, restart, url: str) -> None:
    server = make_server()
    try:
        source = StreamSource(url, stall_timeout_s=1.0, reconnect=POLICY)
        watch = Watch(source)
        try:
            assert watch.wait_frames_after(time.monotonic(), 10.0) is not None, "no frames before the outage"
            kill(server)
            down_at = time.monotonic()
            time.sleep(OUTAGE_S)
            assert watch.error is None, watch.error
            during = source.health()
            assert during.state is SourceState.RECONNECTING
            assert during.down_s > 0 and during.losses == 1
            late = watch.frames_after(down_at + 1.5)  # what was buffered before the kill may trickle in
            assert not late, f"frames during the outage: {len(late)}"
            server = restart()
            back_at = time.monotonic()
            first = watch.wait_frames_after(back_at, RECOVERY_S + POLICY.max_delay_s + 10.0)
            assert first is not None, f"no frames after the server came back (states {watch.states})"
            recovery_s = first - back_at
            time.sleep(0.3)
            log.warning("outage %.1f s: frames again %.2f s after the server's return (backoff cap %.1f s); "
                        "states %s", back_at - down_at, recovery_s, POLICY.max_delay_s,
                        [s.value for s in watch.states])
            assert recovery_s <= RECOVERY_S + POLICY.max_delay_s
            health = source.health()
            assert health.state is SourceState.LIVE and health.reconnects >= 1
            assert health.last_frame_age_s is not None and health.last_frame_age_s < 1.0
            states = [s.value for s in watch.states]
            i = states.index("reconnecting")
            assert "live" in states[i:], states
            assert watch.error is None, watch.error
        finally:
            watch.stop()
    finally:
        kill(server)


def test_http_stream_survives_an_outage():
    port = closed_port()
    _survive_outage(
        make_server=lambda: MjpegServer(fps=30, port=port),
        kill=lambda server: server.stop() if not server._stop.is_set() else None,
        restart=lambda: MjpegServer(fps=30, port=port),
        url=f"http://127.0.0.1:{port}/stream.mjpg",
    )


@pytest.mark.skipif(rtsp_server_missing() is not None, reason=str(rtsp_server_missing()))
def test_rtsp_stream_survives_an_outage():
    port = closed_port()
    server = RtspServer(port)
    _survive_outage(
        make_server=lambda: server,
        kill=lambda s: s.kill(),
        restart=lambda: (server.start(), server)[1],
        url=server.url,
    )


@pytest.mark.skipif(rtsp_server_missing() is not None, reason=str(rtsp_server_missing()))
def test_rtsp_stream_delivers_frames_and_health():
    with RtspServer(closed_port()) as server, StreamSource(server.url, camera_id="rtsp") as src:
        assert (src.width, src.height) == (160, 120)
        metas = []
        for meta, frame in src:
            assert frame.shape == (120, 160, 3)
            metas.append(meta)
            if len(metas) == 5:
                break
        health = src.health()
    assert health.state is SourceState.ENDED  # iteration was abandoned: the consumer is done
    assert health.frames == 5 and health.grabbed >= 5 and health.reconnects == 0
    assert [m.seq for m in metas] == list(range(5))
