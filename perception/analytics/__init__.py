"""Counting for fixed cameras: line crossings and zone occupancy by class (as nvdsanalytics does).

:class:`Counter` (one per camera) turns each frame's tracks into an :class:`~perception.types.Analytics`;
the geometry (:func:`segments_cross`, :func:`points_in_polygon`) is pure. Configuration: the
``analytics:`` section (:class:`perception.config.AnalyticsConfig`); on the wire: the ``counts`` key of
the label message header (``docs/wire-format.md``), read back with :func:`counts_from_header`.
"""

from perception.analytics.counting import (
    Counter,
    Geometry,
    anchor_points,
    counts_from_header,
    counts_lines,
    counts_to_header,
    points_in_polygon,
    resolve_geometry,
    segments_cross,
)

__all__ = [
    "Counter",
    "Geometry",
    "anchor_points",
    "counts_from_header",
    "counts_lines",
    "counts_to_header",
    "points_in_polygon",
    "resolve_geometry",
    "segments_cross",
]
