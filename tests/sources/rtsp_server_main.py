"""A real RTSP server on 127.0.0.1 (GStreamer's gst-rtsp-server), run as its own process by the tests.

Started with the *system* Python (``/usr/bin/python3``), which sees Debian's ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``; it imports nothing of this project. Usage::

    /usr/bin/python3 rtsp_server_main.py PORT [PATH]

serves a live 160x120 test pattern (Motion JPEG over RTP, 15 frames/s) at ``rtsp://127.0.0.1:PORT/PATH``
and prints ``ready`` once it listens. Killing the process is how a test makes "the camera" go away.
``--check`` only verifies that everything needed is installed (exit 0) or says what is missing (exit 1).
"""

import sys

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=160,height=120,framerate=15/1 "
    "! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)
ELEMENTS = ("videotestsrc", "jpegenc", "rtpjpegpay", "udpsink")


def _load():
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    missing = [e for e in ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        raise ImportError(f"GStreamer elements missing: {', '.join(missing)}")
    return GLib, GstRtspServer


def main(argv: list[str]) -> int:
    try:
        glib, rtsp = _load()
    except (ImportError, ValueError) as exc:
        print(f"missing: {exc}", flush=True)
        return 1
    if argv[1:2] == ["--check"]:
        print("ok", flush=True)
        return 0
    port, path = argv[1], (argv[2] if len(argv) > 2 else "test")
    server = rtsp.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = rtsp.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", flush=True)
        return 1
    print("ready", flush=True)
    glib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
