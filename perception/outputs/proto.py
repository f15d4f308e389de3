"""The project's own protobuf messages in Foxglove recordings: tracks, latencies, the class table.

Foxglove's well-known schemas (images, annotations, calibration) come with its SDK; these three have no
well-known equivalent. They are declared here in code (no ``protoc`` step, no generated files) and
registered with their ``FileDescriptorSet``, so that any protobuf reader decodes them from the recording
alone (``mcap-protobuf-support``, Foxglove). Fields are only ever appended (protobuf's own evolution rule).

``package perception;`` (``google.protobuf.Timestamp`` for times)::

    message Track   { uint64 id = 1; uint32 class_id = 2; string class_name = 3; double score = 4;
                      double x0 = 5; double y0 = 6; double x1 = 7; double y1 = 8;   // px, x1/y1 exclusive
                      double vx = 9; double vy = 10;                                // px per second
                      string state = 11; uint32 age = 12; uint32 hits = 13; uint64 area = 14;
                      uint32 instance_index = 15; }
    message Tracks  { Timestamp timestamp = 1; string camera_id = 2; uint64 frame_seq = 3;
                      uint64 frame_index = 4; repeated Track tracks = 5; }
    message Stage   { string name = 1; double ms = 2; }
    message Latency { Timestamp timestamp = 1; string camera_id = 2; repeated Stage stages = 3;
                      double capture_to_output_ms = 4; }
    message Class   { uint32 id = 1; string name = 2; uint32 r = 3; uint32 g = 4; uint32 b = 5; bool thing = 6; }
    message Classes { repeated Class classes = 1; }
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

FILE_NAME = "perception/outputs.proto"
PACKAGE = "perception"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"uint64": _F.TYPE_UINT64, "uint32": _F.TYPE_UINT32, "double": _F.TYPE_DOUBLE,
            "string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL}

_MESSAGES: dict[str, list[tuple[str, str, bool]]] = {  # name -> [(field, type, repeated)], numbered 1..n
    "Track": [("id", "uint64", False), ("class_id", "uint32", False), ("class_name", "string", False),
              ("score", "double", False), ("x0", "double", False), ("y0", "double", False),
              ("x1", "double", False), ("y1", "double", False), ("vx", "double", False), ("vy", "double", False),
              ("state", "string", False), ("age", "uint32", False), ("hits", "uint32", False),
              ("area", "uint64", False), ("instance_index", "uint32", False)],
    "Tracks": [("timestamp", ".google.protobuf.Timestamp", False), ("camera_id", "string", False),
               ("frame_seq", "uint64", False), ("frame_index", "uint64", False), ("tracks", ".perception.Track", True)],
    "Stage": [("name", "string", False), ("ms", "double", False)],
    "Latency": [("timestamp", ".google.protobuf.Timestamp", False), ("camera_id", "string", False),
                ("stages", ".perception.Stage", True), ("capture_to_output_ms", "double", False)],
    "Class": [("id", "uint32", False), ("name", "string", False), ("r", "uint32", False), ("g", "uint32", False),
              ("b", "uint32", False), ("thing", "bool", False)],
    "Classes": [("classes", ".perception.Class", True)],
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3",
                                           dependency=[timestamp_pb2.DESCRIPTOR.name])
    for name, fields in _MESSAGES.items():
        m = f.message_type.add(name=name)
        for number, (field, typ, repeated) in enumerate(fields, start=1):
            label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if typ in _SCALARS:
                m.field.add(name=field, number=number, label=label, type=_SCALARS[typ])
            else:
                m.field.add(name=field, number=number, label=label, type=_F.TYPE_MESSAGE, type_name=typ)
    return f


@cache
def _pool() -> tuple[descriptor_pool.DescriptorPool, bytes]:
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    ours = _file()
    pool.Add(ts)
    pool.Add(ours)
    fds = descriptor_pb2.FileDescriptorSet(file=[ts, ours])
    return pool, fds.SerializeToString()


def schema_data() -> bytes:
    """The serialized ``FileDescriptorSet`` (``google/protobuf/timestamp.proto`` and ours): the schema
    data of every channel of these messages."""
    return _pool()[1]


@cache
def message_class(name: str) -> Any:
    """The generated class of ``perception.<name>`` (e.g. ``"Tracks"``)."""
    pool, _ = _pool()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
