"""Live inputs: a real MJPEG-over-HTTP server on loopback (latest frame, drops, reconnects, stalls),
and cameras / URLs that cannot be opened."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from perception.errors import SourceError
from perception.redact import redact
from perception.sources import CameraSource, Source, StreamSource, open_source
from perception.sources.grabber import NEVER_RECONNECT, ReconnectPolicy
from perception.sources.health import SourceState
from perception.sources.stream import gstreamer_available
from tests.sources.media import frame_value
from tests.sources.mjpeg_server import MjpegServer, closed_port

JPEG_TOLERANCE = 5
QUICK = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.2)
"""Backoff short enough for tests (the default waits up to 5 s between attempts)."""
FAIL_FAST_S = 8.0
"""An unreachable input must fail within this long (the default open timeout is 5 s; refusals are instant)."""


def test_stream_delivers_latest_frames_and_counts_drops():
    with MjpegServer(fps=50) as server, open_source(server.url, camera_id="ipcam") as src:
        assert isinstance(src, StreamSource) and isinstance(src, Source)
        assert (src.width, src.height, src.is_live) == (64, 48, True)
        metas = []
        for meta, frame in src:
            assert frame.shape == (48, 64, 3)
            # The pixels are those of the grabbed frame the meta names (frame n has value frame_value(n)).
            assert abs(int(frame[0, 0, 0]) - frame_value(meta.frame_index)) <= JPEG_TOLERANCE
            metas.append(meta)
            if len(metas) == 8:
                break
            time.sleep(0.1)  # a slow consumer: the server sends ~5 frames meanwhile
        last = metas[-1]
        assert [m.seq for m in metas] == list(range(8))
        assert all(m.camera_id == "ipcam" and (m.width, m.height) == (64, 48) for m in metas)
        indices = [m.frame_index for m in metas]
        assert indices == sorted(set(indices))  # newest first, never an old frame again
        assert last.frame_index > last.seq  # frames were skipped...
        assert src.dropped >= last.frame_index - last.seq > 0  # ...and counted
        for key in ("t_mono_ns", "t_wall_ns", "pts_ns"):
            values = [getattr(m, key) for m in metas]
            assert values == sorted(values) and len(set(values)) == len(values)
        assert metas[0].pts_ns >= 0


def test_stream_reconnects_after_the_stream_ends(caplog):
    # Every response ends after 6 frames: the source reopens the URL and carries on.
    with MjpegServer(fps=100, max_frames=6) as server:
        with caplog.at_level(logging.WARNING, logger="perception.sources.grabber"):
            with StreamSource(server.url, max_frames=20, reconnect=QUICK) as src:
                metas = [m for m, _ in src]
        assert [m.seq for m in metas] == list(range(20))
        assert src.reconnects >= 1 and server.connections >= 2
        health = src.health()
        assert health.reconnects == src.reconnects and health.losses >= 1 and health.frames == 20
        assert health.state is SourceState.ENDED
    assert any("stopped delivering frames; reconnecting" in r.getMessage() for r in caplog.records)


def test_stream_gives_up_after_a_finite_number_of_attempts(caplog):
    server = MjpegServer(fps=50)
    src = StreamSource(server.url, reconnect=ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.1, max_attempts=2))
    received = 0
    with caplog.at_level(logging.WARNING, logger="perception.sources.grabber"):
        with pytest.raises(SourceError,
                           match=r"stream http://127\.0\.0\.1:\d+/stream\.mjpg .* 2 reconnect attempts failed"):
            for _ in src:
                received += 1
                if received == 3:
                    server.stop()  # the camera goes away for good
    assert src.health().state is SourceState.FAILED
    src.close()
    assert src.health().state is SourceState.FAILED  # closing does not hide the failure
    assert received >= 3


def test_stalled_stream_raises_when_reconnecting_is_off():
    with MjpegServer(fps=50, hang_after=3) as server:
        src = StreamSource(server.url, stall_timeout_s=1.0, read_timeout_s=30.0, reconnect=NEVER_RECONNECT)
        with pytest.raises(SourceError,
                           match=r"stream http://127\.0\.0\.1:\d+/stream\.mjpg delivered no frame for 1 s"):
            for _ in src:
                pass
        server.stop()  # unblocks the grab thread's read
        src.close()


def test_a_stall_is_a_loss_and_the_stream_is_reopened():
    # The server keeps each connection open but goes silent after 3 frames: a stall, not a close.
    with MjpegServer(fps=50, hang_after=3) as server:
        with StreamSource(server.url, stall_timeout_s=0.5, reconnect=QUICK, max_frames=8) as src:
            metas = [m for m, _ in src]
            health = src.health()
        server.stop()
    assert len(metas) == 8
    assert health.reconnects >= 1 and server.connections >= 2
    assert "delivered no frame" in health.last_error or "stopped delivering" in health.last_error


def test_close_from_another_thread_ends_iteration():
    with MjpegServer(fps=20) as server:
        src = StreamSource(server.url)
        timer = threading.Timer(0.3, src.close)
        timer.start()
        count = sum(1 for _ in src)  # ends when closed, without an error
        timer.join()
        assert count >= 1


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_unreachable_url_fails_fast(scheme):
    url = f"{scheme}://127.0.0.1:{closed_port()}/x"
    started = time.monotonic()
    with pytest.raises(SourceError, match=rf"cannot open stream {scheme}://127\.0\.0\.1:\d+/x: unreachable"):
        open_source(url)
    assert time.monotonic() - started < FAIL_FAST_S


def test_credentials_are_redacted():
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    url = f"rtsp://admin:hunter2@127.0.0.1:{closed_port()}/x"
    with pytest.raises(SourceError) as info:
        open_source(url)
    assert "hunter2" not in str(info.value) and "admin:***@" in str(info.value)


def test_camera_index_99_cannot_be_opened():
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot open camera 99 \(camera:99\)"):
        open_source("camera:99")
    assert time.monotonic() - started < FAIL_FAST_S


def test_camera_device_path_that_does_not_exist():
    with pytest.raises(SourceError, match=r"cannot open camera /dev/video99: no such device"):
        open_source("/dev/video99")
    with pytest.raises(SourceError, match=r"camera /dev/video98"):
        CameraSource("/dev/video98")


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer")
def test_gstreamer_missing_is_explained():
    with pytest.raises(SourceError, match="this OpenCV build has no GStreamer support"):
        open_source("gst:videotestsrc num-buffers=5")
