"""``python -m perception.sim``: prints timings and statistics, writes a readable preview video."""

from __future__ import annotations

import subprocess
import sys

import cv2

from perception.sim.__main__ import main


def test_preview_writes_a_video_with_three_panels(tmp_path, capsys):
    out = tmp_path / "preview.mp4"
    assert main(["--frames", "6", "--width", "160", "--height", "96", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "render: p50" in printed and "objects:" in printed
    cap = cv2.VideoCapture(str(out))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
        ok, frame = cap.read()
        assert ok and frame.shape == (96, 3 * 160, 3)
    finally:
        cap.release()


def test_bad_option_is_one_line_and_nonzero_exit():
    proc = subprocess.run(
        [sys.executable, "-m", "perception.sim", "--frames", "0"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: scene config: num_frames=0")
    assert len(proc.stderr.strip().splitlines()) == 1
