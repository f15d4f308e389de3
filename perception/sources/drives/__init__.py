"""Recorded drives as a frame source.

* :mod:`perception.sources.drives.source` — replay the camera topics of a ROS 1 bag, a ROS 2 bag (sqlite3
  or MCAP storage) or an MCAP file (:func:`~perception.sources.drives.source.open_drive_source`).
* :mod:`.reader` (the container protocol), :mod:`.opener` (picks a reader), :mod:`.rosbag`,
  :mod:`.mcapfile`, :mod:`.schemas`, :mod:`.decode`: the parts behind it.

Recording the pipeline's output is an output (:mod:`perception.outputs.recorder`). Nothing is imported
here, so ``perception --help`` does not pay for ``rosbags`` / ``mcap``.
"""
