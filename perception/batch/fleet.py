"""The batch on Ray: drive tasks, an actor pool for inference, one progress line.

* **Inference**: a pool of :class:`SegmentActor` (``model loaded once per actor``); with GPUs in the
  cluster each actor asks for ``num_gpus`` (default 1), else for CPUs. Actors restart when their
  worker is lost (``max_restarts``), and a call on a lost actor is retried on the restarted one
  (``max_task_retries``): calls are pure functions of the frames, so a retry gives the same outputs.
* **Drives**: one task per drive (:func:`perception.batch.drive.run_drive`) decodes the drive, sends
  chunks of frames to an actor of the pool (chunk ``k`` of drive ``d`` to actor ``(d + k) mod n``) and
  post-processes them in order. A task whose worker dies is retried whole (``max_retries``): its
  outputs are written aside and only moved into place when complete, so a retry starts clean.
* **Model**: the ONNX file and its card travel through Ray's object store, so nodes need no shared
  copy of ``engines/``; the drives and ``--out`` must be reachable under the same paths on every node.

Ray is imported here only (``pip install 'perception[batch]'``); the pipeline never needs it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.batch.drive import DriveJob, run_drive
from perception.errors import ConfigError

log = logging.getLogger(__name__)

POLL_S = 0.5
ACTOR_RESTARTS = 3
TASK_RETRIES = 3


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """A model and its card as bytes (what ships to every node)."""

    name: str
    onnx: bytes
    card: bytes

    @classmethod
    def read(cls, path: str | Path) -> ModelFiles:
        from perception.modelcard import card_path_for

        p = Path(path)
        return cls(name=p.stem, onnx=p.read_bytes(), card=card_path_for(p).read_bytes())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx + b"\0" + self.card).hexdigest()

    def materialize(self) -> str:
        """Write the files once per node (a folder named by their hash) and return the model's path."""
        folder = Path(tempfile.gettempdir()) / "perception-batch-models" / self.sha256[:16]
        path = folder / f"{self.name}.onnx"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            for suffix, data in ((".card.json", self.card), (".onnx", self.onnx)):  # the model last: it marks done
                tmp = folder / f".{os.getpid()}{suffix}"
                tmp.write_bytes(data)
                os.replace(tmp, folder / f"{self.name}{suffix}")
        return str(path)


class SegmentActor:
    """Loads the model once; segments chunks of frames. ``per_call`` frames go through one backend call
    (1: one frame per call, bit-identical to ``perception run``, whose single-stream inference does the same)."""

    def __init__(self, model: ModelFiles, model_config, per_call: int = 1) -> None:
        from perception.runtime.infer import InferenceSettings, open_segmenter, warm_up

        settings = InferenceSettings(model=model_config, model_path=model.materialize(), batch=None)
        self.backend, self.seg = open_segmenter(settings)
        self.per_call = per_call
        warm_up(self.seg, per_call)

    def infer(self, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        out = []
        for i in range(0, len(frames), self.per_call):
            for o in self.seg.batch(frames[i:i + self.per_call]):  # views of the backend's buffers: copied
                out.append({k: np.array(v) for k in ("semantic_logits", "center_heatmap", "center_offsets")
                            if (v := getattr(o, k)) is not None})
        return out

    def ping(self) -> bool:
        return True


class Progress:
    """Frames done per drive, reported by the drive tasks, read by the driver."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}
        self.total: dict[int, int | None] = {}

    def update(self, key: int, done: int, total: int | None) -> None:
        self.done[key] = done
        self.total[key] = total

    def get(self) -> tuple[dict[int, int], dict[int, int | None]]:
        return self.done, self.total


class _RoundRobin:
    """Chunk ``k`` of drive ``key`` goes to actor ``(key + k) mod n``: drives spread over the pool."""

    def __init__(self, actors: list, key: int) -> None:
        self.actors = actors
        self.k = key

    def __call__(self, frames: list[np.ndarray]):
        actor = self.actors[self.k % len(self.actors)]
        self.k += 1
        return actor.infer.remote(frames)


def _drive_task(job: DriveJob, key: int, model: ModelFiles, actors: list, progress) -> dict:
    import ray

    def report(done: int, total: int | None) -> None:
        progress.update.remote(key, done, total)

    return run_drive(job, model.materialize(), _RoundRobin(actors, key), ray.get, report).as_dict()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterOptions:
    address: str | None = None
    """None: a local Ray on this machine's cores; ``auto`` or ``ray://HOST:PORT``: a running cluster."""
    num_cpus: int | None = None
    """CPUs of the local Ray (None: all); ignored with an address."""
    actors: int | None = None
    """Inference actors (None: one per GPU in the cluster, else one per 4 CPUs, at least 1)."""
    gpus_per_actor: float | None = None
    """None: 1 when the cluster has GPUs, else 0."""
    cpus_per_actor: float = 1.0
    cpus_per_drive: float = 1.0
    per_call: int = 1


def connect(options: ClusterOptions):
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("perception batch needs Ray: pip install 'perception[batch]'") from exc
    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
    kwargs = {"runtime_env": env, "log_to_driver": False, "logging_level": logging.WARNING}
    if options.address:
        ray.init(address=options.address, **kwargs)
    else:
        ray.init(num_cpus=options.num_cpus, include_dashboard=False, **kwargs)
    return ray


def _pool(ray, options: ClusterOptions, model: ModelFiles, model_config) -> list:
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    per_gpu = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    n = options.actors or (int(gpus / per_gpu) if per_gpu else max(1, int(res.get("CPU", 1)) // 4))
    cls = ray.remote(SegmentActor).options(num_cpus=options.cpus_per_actor, num_gpus=per_gpu,
                                           max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)
    model_ref = ray.put(model)
    actors = [cls.remote(model_ref, model_config, options.per_call) for _ in range(max(1, n))]
    ray.get([a.ping.remote() for a in actors])  # a model that does not load fails here, once
    return actors


def run_batch(jobs: list[DriveJob], model: ModelFiles, options: ClusterOptions, *, progress: bool = True) -> list[dict]:
    """Every job through the cluster; results in the order of ``jobs``."""
    ray = connect(options)
    try:
        actors = _pool(ray, options, model, jobs[0].config.model)
        tracker = ray.remote(Progress).options(num_cpus=0).remote()
        task = ray.remote(_drive_task).options(num_cpus=options.cpus_per_drive, max_retries=TASK_RETRIES)
        model_ref = ray.put(model)
        refs = {task.remote(job, i, model_ref, actors, tracker): i for i, job in enumerate(jobs)}
        return _collect(ray, refs, jobs, tracker, progress)
    finally:
        ray.shutdown()


def _collect(ray, refs: dict, jobs: list[DriveJob], tracker, show: bool) -> list[dict]:
    from perception.batch.progress import ProgressLine

    results: list[dict | None] = [None] * len(jobs)
    line = ProgressLine(len(jobs), enabled=show)
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                i = refs[ref]
                results[i] = _result(ray, ref, jobs[i])
                line.drive_done(i, results[i])
            line.frames(*ray.get(tracker.get.remote()))
    finally:
        line.close()
    return results


def _result(ray, ref, job: DriveJob) -> dict:
    try:
        return ray.get(ref)
    except Exception as exc:  # the task's worker was lost more often than it is retried
        return {"input": job.input, "out_dir": job.out_dir, "status": "failed", "frames": 0,
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                "seconds": 0.0, "summary": {}}
