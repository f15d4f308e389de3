"""The tracker's per-track state: one row per track, one column per quantity, kept in step by one owner.

:class:`TrackTable` stacks every track's state in arrays (so prediction, costs and matching are
vectorised over tracks) and is the only code that selects or adds rows: :meth:`~TrackTable.keep`
(removals), :meth:`~TrackTable.take` (a copy of some rows) and :meth:`~TrackTable.append` (births).
A column added to the dataclass is carried through all three without another list to update.
Columns may be updated in place (``table.hits[rows] += 1``) or replaced whole (``table.mean = ...``)
as long as they keep one row per track.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = ["TrackTable"]


@dataclass(slots=True, eq=False)
class TrackTable:
    """Every track's state; row ``i`` of each column is track ``i`` (``N`` tracks)."""

    ids: np.ndarray
    """``int64[N]`` track ids (never reused)."""
    cls: np.ndarray
    """``int64[N]`` class ids."""
    state: np.ndarray
    """``int64[N]`` :class:`~perception.types.TrackState` values."""
    hits: np.ndarray
    """``int64[N]`` matches so far."""
    age: np.ndarray
    """``int64[N]`` frames since birth (1 at birth)."""
    lost: np.ndarray
    """``int64[N]`` frames since the last match."""
    t_hit: np.ndarray
    """``int64[N]`` capture time of the last match, ns."""
    score: np.ndarray
    """``float64[N]`` score of the last matched detection."""
    mean: np.ndarray
    """``float64[N, 8]`` Kalman state ``(cx, cy, w, h, vcx, vcy, vw, vh)`` (:mod:`~perception.tracking.kalman`)."""
    cov: np.ndarray
    """``float64[N, 4, 3]`` per-coordinate covariance blocks (:mod:`~perception.tracking.kalman`)."""
    mask_ref: np.ndarray
    """``float64[N, 2]`` ``(cx, cy)`` of the track when its remembered mask was seen."""
    mask_seen: np.ndarray
    """``bool[N]`` whether the track's mask of the last frame is remembered."""
    app: np.ndarray
    """``float32[N, bins**3]`` colour embeddings (:mod:`~perception.tracking.appearance`)."""
    app_ok: np.ndarray
    """``bool[N]`` whether a track has a colour embedding yet."""
    emb: np.ndarray
    """``float32[N, D]`` learned re-id embeddings (``D`` = 0 until the first are given)."""
    emb_ok: np.ndarray
    """``bool[N]`` whether a track has a re-id embedding yet."""

    @classmethod
    def empty(cls, app_dim: int, emb_dim: int = 0) -> TrackTable:
        """A table without tracks, with colour embeddings of ``app_dim`` and re-id ones of ``emb_dim``."""
        i64 = np.zeros(0, np.int64)
        return cls(
            ids=i64, cls=i64.copy(), state=i64.copy(), hits=i64.copy(), age=i64.copy(), lost=i64.copy(),
            t_hit=i64.copy(), score=np.zeros(0, np.float64), mean=np.zeros((0, 8)), cov=np.zeros((0, 4, 3)),
            mask_ref=np.zeros((0, 2)), mask_seen=np.zeros(0, bool), app=np.zeros((0, app_dim), np.float32),
            app_ok=np.zeros(0, bool), emb=np.zeros((0, emb_dim), np.float32), emb_ok=np.zeros(0, bool),
        )

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` (``bool[N]``) is true, in their order (in place)."""
        for name in _COLUMNS:
            setattr(self, name, getattr(self, name)[mask])

    def take(self, index: np.ndarray) -> TrackTable:
        """A new table of the rows ``index`` (``int[K]`` or ``bool[N]``), copied."""
        return TrackTable(**{name: getattr(self, name)[index] for name in _COLUMNS})

    def append(self, new: TrackTable) -> None:
        """Add the rows of ``new`` after the existing ones (in place)."""
        for name in _COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(new, name)]))

    def resize_embeddings(self, dim: int) -> None:
        """Make room for re-id embeddings of size ``dim``, forgetting any held (they are all zero
        until the first embeddings arrive)."""
        self.emb = np.zeros((len(self), dim), np.float32)


_COLUMNS = tuple(f.name for f in dataclasses.fields(TrackTable))
"""Every column, in declaration order: what :meth:`TrackTable.keep`, ``take`` and ``append`` carry."""
