"""Recorded drives in and out.

* :mod:`perception.drives.source` — replay the camera topics of a ROS 1 bag, a ROS 2 bag (sqlite3 or
  MCAP storage) or an MCAP file as a frame source (:func:`~perception.drives.source.open_drive_source`).
* :mod:`perception.drives.record` — write the pipeline's published outputs to a Foxglove-ready MCAP.
* :mod:`perception.drives.command` — the ``perception record`` command.

Nothing is imported here, so ``perception --help`` does not pay for ``rosbags`` / ``mcap``.
"""
