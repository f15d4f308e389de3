"""A real MJPEG-over-HTTP server on 127.0.0.1 (multipart/x-mixed-replace), for live-stream tests.

Each frame is a flat grey image whose value encodes its number (``frame_value(n)``), pushed at a
fixed rate, as an IP camera does. ``stop()`` closes the listening socket and every connection, so a
client sees the stream die and cannot reconnect.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from tests.sources.media import frame_value

BOUNDARY = "frameboundary"


class MjpegServer:
    def __init__(
        self,
        *,
        width: int = 64,
        height: int = 48,
        fps: float = 50.0,
        max_frames: int | None = None,
        hang_after: int | None = None,
        port: int = 0,
    ) -> None:
        """``max_frames``: end each response after this many frames (the client sees the stream end).
        ``hang_after``: after this many frames keep the connection open but send nothing (a stall).
        ``port``: listen there (0 = any free port); a stopped server's port can be given to a new one,
        which is how a test restarts "the camera"."""
        self.width, self.height, self.fps, self.max_frames = width, height, fps, max_frames
        self.hang_after = hang_after
        self.frames_sent = 0
        self.connections = 0
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.end_headers()
                n = 0
                try:
                    while not server._stop.is_set() and (server.max_frames is None or n < server.max_frames):
                        if server.hang_after is not None and n >= server.hang_after:
                            server._stop.wait()
                            break
                        image = np.full((server.height, server.width, 3), frame_value(n), np.uint8)
                        _ok, jpeg = cv2.imencode(".jpg", image)
                        data = jpeg.tobytes()
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                        )
                        self.wfile.write(data)
                        self.wfile.write(b"\r\n")
                        self.wfile.flush()
                        n += 1
                        server.frames_sent += 1
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
