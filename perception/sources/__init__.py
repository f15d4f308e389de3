"""Frame sources: one module per kind of input behind the :class:`Source` protocol.

Open one with :func:`open_source` (the single format switch); :class:`Pacer` releases replayed frames
at the recorded rate × speed.
"""

from perception.sources.base import Source
from perception.sources.camera import CameraSource
from perception.sources.factory import describe_sources, open_source
from perception.sources.images import ImageFolderSource
from perception.sources.pacing import Pacer
from perception.sources.stream import StreamSource
from perception.sources.video import VideoFileSource

__all__ = [
    "CameraSource",
    "ImageFolderSource",
    "Pacer",
    "Source",
    "StreamSource",
    "VideoFileSource",
    "describe_sources",
    "open_source",
]
