"""Replay the camera topics of a recorded drive (ROS 1/2 bag, MCAP) as a frame :class:`Source`.

Frames of all selected topics are interleaved in the order they were logged (the container's log /
receive time). Each frame's ``camera_id`` is its topic; ``seq`` and ``frame_index`` count per topic.
``t_rec_ns`` is the message's header stamp (the driver's capture time); when a message has none
(stamp 0) the log time is used instead. ``t_mono_ns``/``t_wall_ns`` are when the frame was read.
``pts_ns`` is the log time relative to the first replayed message, so a
:class:`~perception.sources.pacing.Pacer` replays the drive at the rate it was recorded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.errors import ConfigError, DataError, SourceError
from perception.sources.base import Source, make_meta
from perception.sources.drives.decode import ImageMessage, decode_image
from perception.sources.drives.opener import open_reader
from perception.sources.drives.reader import DriveReader
from perception.sources.health import HealthTracker
from perception.types import FrameMeta

log = logging.getLogger(__name__)

PROBE_MESSAGES = 16
"""Messages per topic read at open to learn its frame size (the first decodable one wins). More rides
out a longer run of broken messages at the start of a topic, at the cost of a slower open; a topic with
no decodable frame among them gets no size and only its frames that fit the others' size are replayed."""


@dataclass(slots=True)
class TopicStats:
    """What happened to one topic during a replay."""

    topic: str
    delivered: int = 0
    failed: int = 0
    """Messages skipped: unknown encoding, undecodable data, or larger than the probed size."""
    stamp_fallbacks: int = 0
    """Delivered frames whose header stamp was 0, so ``t_rec_ns`` is the log time instead."""
    last_error: str = ""


class DriveSource(Source):
    """The image topics of a recorded drive, replayed frame by frame (nothing is dropped).

    Args:
        path: a ROS 1 ``.bag``, an ``.mcap`` file, a ROS 2 bag folder (holding ``metadata.yaml``) or
            its ``.db3`` file.
        topics: image topics to replay; empty = every image topic of the drive.
        camera_id: id of the source as a whole (logs); each frame's ``camera_id`` is its topic.
        loop: start again from ``start_s`` at the end, forever. ``seq`` and ``pts_ns`` keep increasing,
            ``frame_index`` restarts.
        start_s: skip the first ``start_s`` seconds of the drive (log time).
        max_frames: stop after this many frames in total (all topics together).

    ``width``/``height`` are the largest frame size over the selected topics (each topic's first
    decodable message); frames keep their own size and ``FrameMeta.width/height`` say it.
    ``num_frames`` is the number of frames a non-looping replay will deliver at most (None when
    unknown). A yielded array is valid until the next frame is requested: raw images are converted
    into one reused buffer per topic (unpadded ``bgr8`` ones are read-only views of the message).

    Damage: a message that cannot be decoded is skipped and counted (:attr:`stats`, ``health().skipped``);
    a ROS 1 bag truncated by a crash (or with a damaged chunk) is replayed up to the damage, with a
    warning and ``health().truncated`` set.

    Raises:
        SourceError: missing / unreadable / corrupt drive with nothing to replay, no image topics, a
            requested topic that is absent (the message lists the image topics), or no selected topic
            with a decodable frame.
        ConfigError: a bad argument value.
    """

    is_live = False
    dropped = 0
    """A replay never drops frames (skipped bad messages are counted per topic in :attr:`stats`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        topics: Sequence[str] = (),
        camera_id: str = "drive",
        loop: bool = False,
        start_s: float = 0.0,
        max_frames: int | None = None,
    ) -> None:
        if start_s < 0 or not math.isfinite(start_s):
            raise ConfigError(f"start_s must be a finite number of seconds >= 0, got {start_s!r}")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        if isinstance(topics, str):
            topics = (topics,)
        self.path = Path(path)
        self.camera_id = camera_id
        self.loop = loop
        self.max_frames = max_frames
        self._health = HealthTracker()
        self._reader: DriveReader | None = open_reader(self.path)
        self._report_damage()
        try:
            self._setup(tuple(topics), start_s)
        except BaseException:
            self.close()
            raise
        self._iterated = False

    def _setup(self, requested: tuple[str, ...], start_s: float) -> None:
        reader = self._reader
        available = reader.image_topics
        if not available:
            others = ", ".join(f"{t} ({s})" for t, s in sorted(reader.other_topics.items())) or "none"
            raise SourceError(f"recorded drive {self.path} has no image topics (its topics: {others})")
        if requested:
            missing = [t for t in requested if t not in available]
            if missing:
                raise SourceError(
                    f"recorded drive {self.path} has no image topic {', '.join(missing)}; its image topics: "
                    + ", ".join(f"{t} ({i.schema}, {i.count if i.count is not None else '?'} msgs)"
                                for t, i in sorted(available.items()))
                )
            self.topics: tuple[str, ...] = tuple(dict.fromkeys(requested))
        else:
            self.topics = tuple(sorted(available))
        self._start_ns = reader.start_ns + round(start_s * 1e9)
        if start_s > 0 and self._start_ns > reader.end_ns:
            raise SourceError(
                f"start offset {start_s} s is past the end of {self.path} "
                f"({(reader.end_ns - reader.start_ns) / 1e9:.3f} s long)"
            )
        self.stats: dict[str, TopicStats] = {t: TopicStats(topic=t) for t in self.topics}
        self._buffers: dict[str, np.ndarray] = {}
        self._open_pass: Generator[tuple[str, int, object], None, None] | None = None

        # Frame size of each topic: its first decodable message.
        sizes: dict[str, tuple[int, int]] = {}
        for topic in self.topics:
            causes: list[str] = []
            probe = reader.messages([topic], start_ns=self._start_ns)
            try:
                for i, (_, _, payload) in enumerate(probe):
                    if i >= PROBE_MESSAGES:
                        break
                    try:
                        image = decode_image(reader.image(topic, payload))
                    except DataError as exc:
                        causes.append(str(exc))
                        continue
                    sizes[topic] = (int(image.shape[1]), int(image.shape[0]))
                    break
            finally:
                probe.close()
            if topic not in sizes:
                cause = causes[-1] if causes else "no messages after the start offset"
                log.warning("%s: topic %s has no decodable frame in its first %d messages (%s)",
                            self.path, topic, PROBE_MESSAGES, cause)
                self.stats[topic].last_error = cause
        if not sizes:
            raise SourceError(
                f"no frame of {self.path} can be decoded on topic(s) "
                + "; ".join(f"{t}: {self.stats[t].last_error}" for t in self.topics)
            )
        self.topic_sizes: dict[str, tuple[int, int]] = sizes
        """``(width, height)`` of each topic's first decodable frame."""
        self.width = max(w for w, _ in sizes.values())
        self.height = max(h for _, h in sizes.values())

        counts = [available[t].count for t in self.topics]
        total = None if any(c is None for c in counts) else sum(counts)
        duration_s = (reader.end_ns - reader.start_ns) / 1e9
        self.fps: float | None = (total - 1) / duration_s if total and total > 1 and duration_s > 0 else None
        if self.loop:
            total = self.max_frames  # endless unless capped
        elif start_s > 0:
            total = None  # counting the messages after an offset would mean reading them all
        elif total is not None and self.max_frames is not None:
            total = min(total, self.max_frames)
        self.num_frames: int | None = total
        """Frames this replay delivers at most (over all selected topics); None when unknown (looping, offset)."""

    # ------------------------------------------------------------------ Source API
    def __iter__(self) -> Iterator[tuple[FrameMeta, np.ndarray]]:
        if self._iterated:
            raise SourceError(f"drive source {self.path} can be iterated only once; open it again")
        self._iterated = True
        seq = {t: 0 for t in self.topics}
        delivered = 0
        pass_offset_ns = 0
        origin_ns: int | None = None  # log time of the first replayed message: pts 0
        try:
            while True:
                index = {t: 0 for t in self.topics}
                last_pts_ns = None
                pass_delivered = 0
                reader = self._reader
                if reader is None:
                    return
                messages = self._until_damage(reader.messages(self.topics, start_ns=self._start_ns))
                self._open_pass = messages
                for topic, log_ns, payload in messages:
                    if self._reader is None:  # closed while iterating
                        return
                    frame_index = index[topic]
                    index[topic] += 1
                    stats = self.stats[topic]
                    try:
                        msg = reader.image(topic, payload)
                        frame = decode_image(msg, out=self._buffer(topic, msg))
                        h, w = frame.shape[:2]
                        if w > self.width or h > self.height:
                            raise DataError(
                                f"frame is {w}x{h}, larger than the drive's probed size {self.width}x{self.height}"
                            )
                    except DataError as exc:
                        self._skip(stats, exc)
                        continue
                    if origin_ns is None:
                        origin_ns = log_ns
                    pts_ns = pass_offset_ns + log_ns - origin_ns
                    last_pts_ns = pts_ns
                    stamp = msg.stamp_ns
                    if stamp <= 0:
                        stamp = log_ns
                        stats.stamp_fallbacks += 1
                    meta = make_meta(
                        seq=seq[topic], camera_id=topic, frame_index=frame_index, pts_ns=pts_ns,
                        width=int(w), height=int(h), t_rec_ns=int(stamp),
                    )
                    self._health.frame_read()
                    yield meta, frame
                    self._health.frames += 1
                    seq[topic] += 1
                    stats.delivered += 1
                    delivered += 1
                    pass_delivered += 1
                    if self.max_frames is not None and delivered >= self.max_frames:
                        return
                self._check_complete(reader, index)
                if not self.loop or pass_delivered == 0 or last_pts_ns is None:
                    return
                period_ns = round(1e9 / self.fps) if self.fps else 0
                pass_offset_ns = last_pts_ns + period_ns
        finally:
            if self._open_pass is not None:
                self._open_pass.close()  # releases the file handle of an abandoned pass
                self._open_pass = None
            self._health.end()
            self._report()

    def _buffer(self, topic: str, msg: ImageMessage) -> np.ndarray | None:
        """The reused conversion buffer of ``topic`` for a raw image of ``msg``'s size (None: compressed)."""
        if msg.kind != "raw" or msg.width <= 0 or msg.height <= 0:
            return None
        buf = self._buffers.get(topic)
        if buf is None or buf.shape[:2] != (msg.height, msg.width):
            buf = self._buffers[topic] = np.empty((msg.height, msg.width, 3), np.uint8)
        return buf

    def _until_damage(self, messages: Iterator[tuple[str, int, object]]) -> Iterator[tuple[str, int, object]]:
        """``messages`` up to damage in the container: a replay that delivered frames ends there, with a
        warning (``health().truncated``); one that delivered none raises the container's SourceError."""
        try:
            yield from messages
        except SourceError as exc:
            if not self._health.frames:
                raise
            self._health.truncated = True
            self._health.last_error = str(exc)
            log.warning("%s; the replay ends here, after %d frame(s)", exc, self._health.frames)
        finally:
            close = getattr(messages, "close", None)
            if close is not None:
                close()

    def _check_complete(self, reader: DriveReader, read: dict[str, int]) -> None:
        """After a full pass from the start: every message the container's index declares was read.

        Some containers skip damaged records silently; a shortfall means the file is corrupt (unless
        the damage was already reported: ``health().truncated``).
        """
        if self._start_ns != reader.start_ns or self._health.truncated:
            return
        for topic, n in read.items():
            declared = reader.image_topics[topic].count
            if declared is not None and n < declared:
                raise SourceError(
                    f"recorded drive {self.path} is corrupt: topic {topic} declares {declared} messages but only "
                    f"{n} could be read"
                )

    def _report_damage(self) -> None:
        """A damaged drive that is replayed in part (:mod:`.ros1salvage`): say so, once."""
        damage = getattr(self._reader, "damage", None)
        if not damage:
            return
        lost = getattr(self._reader, "lost", None)
        recovered = getattr(self._reader, "recovered", "?")
        self._health.truncated = True
        self._health.skipped += lost or 0
        self._health.last_error = f"{self.path} is damaged: {damage}"
        log.warning("%s is damaged (%s): replaying the %s message(s) before the damage; %s", self.path, damage,
                    recovered, "the rest is lost" if lost is None else f"{lost} message(s) lost")

    def _skip(self, stats: TopicStats, exc: DataError) -> None:
        self._health.skip(f"{self.path}: topic {stats.topic}: {exc}")
        stats.failed += 1
        stats.last_error = str(exc)
        if stats.failed == 1:
            log.warning(
                "%s: skipping a message of topic %s: %s (further ones are counted)", self.path, stats.topic, exc
            )
        else:
            log.debug("%s: skipping a message of topic %s: %s", self.path, stats.topic, exc)

    def _report(self) -> None:
        for s in self.stats.values():
            if s.failed and not s.delivered:
                log.warning("%s: topic %s delivered no frames: all %d of its messages failed (%s)",
                            self.path, s.topic, s.failed, s.last_error)
            elif s.failed:
                log.warning("%s: topic %s: %d message(s) skipped, %d frames delivered (last cause: %s)",
                            self.path, s.topic, s.failed, s.delivered, s.last_error)
            if s.stamp_fallbacks:
                log.info("%s: topic %s: %d frame(s) had no header stamp; their log time was used",
                         self.path, s.topic, s.stamp_fallbacks)

    def close(self) -> None:
        """Close the drive file. Idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __repr__(self) -> str:
        return f"DriveSource({str(self.path)!r}, topics={list(self.topics)}, {self.width}x{self.height})"


def open_drive_source(
    spec: str | os.PathLike[str],
    *,
    camera_id: str = "drive",
    loop: bool = False,
    start_s: float = 0.0,
    max_frames: int | None = None,
    **options: object,
) -> DriveSource:
    """Open a recorded drive as a source (called by :func:`perception.sources.factory.open_source`).

    Options: ``topics`` (a sequence of topic names, or one name). Anything else is a ConfigError.
    """
    unknown = sorted(set(options) - {"topics"})
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for a recorded drive source; allowed: "
                          "topics")
    topics = options.get("topics") or ()
    if isinstance(topics, str):
        topics = (topics,)
    if not all(isinstance(t, str) and t for t in topics):  # type: ignore[union-attr]
        raise ConfigError(f"topics must be a list of topic names, got {topics!r}")
    return DriveSource(spec, topics=tuple(topics), camera_id=camera_id, loop=loop, start_s=start_s,
                       max_frames=max_frames)
