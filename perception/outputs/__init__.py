"""Everything a :class:`~perception.types.FrameResult` can be written to, and the viewers of the stream.

* :mod:`.base` — the :class:`~perception.outputs.base.Sink` protocol every output implements;
* :mod:`.registry` — where the pipeline's sinks are chosen;
* :mod:`.publisher` — the ZeroMQ publisher (the contract with consumers is :mod:`perception.transport`);
* :mod:`.overlay` — the overlay video;
* :mod:`.foxglove_sink` — Foxglove: MCAP recordings and the live WebSocket server, through its SDK
  (messages in :mod:`.foxglove_log`, the project's own protobuf schemas in :mod:`.proto`);
* :mod:`.ros2` — ROS 2 bags (MCAP storage);
* :mod:`.frames` — one frame as the recorders see it, from a FrameResult or a label message;
* :mod:`.recorder` — recordings of a published stream (``perception record``);
* :mod:`.rerun` — live viewing in Rerun (``perception view --rerun``).

Nothing is imported here, so ``perception --help`` pays for none of them.
"""
