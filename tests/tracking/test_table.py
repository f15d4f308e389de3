"""TrackTable: the tracker's per-track state moves row by row, every column together."""

from __future__ import annotations

import dataclasses

import numpy as np

from perception.tracking import TrackTable


def _rows(ids, app_dim=3, emb_dim=2) -> TrackTable:
    """A table with one row per id, every column filled from the id (so rows can be recognised)."""
    ids = np.asarray(ids, np.int64)
    k = ids.size
    f = ids.astype(np.float64)
    return TrackTable(
        ids=ids, cls=ids * 10, state=ids % 3, hits=ids + 1, age=ids + 2, lost=ids + 3, t_hit=ids * 1000,
        score=f / 10, mean=np.repeat(f[:, None], 8, 1), cov=np.repeat(f[:, None, None], 12, 1).reshape(k, 4, 3),
        mask_ref=np.repeat(f[:, None], 2, 1), mask_seen=ids % 2 == 0,
        app=np.repeat(f[:, None], app_dim, 1).astype(np.float32), app_ok=ids % 2 == 1,
        emb=np.repeat(f[:, None], emb_dim, 1).astype(np.float32), emb_ok=ids > 2,
    )  # fmt: skip


def _assert_rows_are(table: TrackTable, ids) -> None:
    expected = _rows(ids, table.app.shape[1], table.emb.shape[1])
    assert len(table) == len(ids)
    for f in dataclasses.fields(TrackTable):
        got, want = getattr(table, f.name), getattr(expected, f.name)
        assert got.dtype == want.dtype and got.shape == want.shape, f.name
        np.testing.assert_array_equal(got, want, err_msg=f.name)


def test_empty_table_has_every_column_with_zero_rows():
    t = TrackTable.empty(app_dim=216)
    assert len(t) == 0 and t.app.shape == (0, 216) and t.emb.shape == (0, 0)
    assert t.mean.shape == (0, 8) and t.cov.shape == (0, 4, 3) and t.ids.dtype == np.int64


def test_append_keep_and_take_move_every_column_together():
    t = TrackTable.empty(app_dim=3, emb_dim=2)
    t.append(_rows([1, 2, 3]))
    t.append(_rows([4, 5]))
    _assert_rows_are(t, [1, 2, 3, 4, 5])
    t.keep(np.array([True, False, True, True, False]))
    _assert_rows_are(t, [1, 3, 4])
    some = t.take(np.array([2, 0]))
    _assert_rows_are(some, [4, 1])
    some.hits[:] = 0  # a copy: the table is untouched
    _assert_rows_are(t, [1, 3, 4])


def test_resize_embeddings_keeps_one_row_per_track():
    t = _rows([1, 2], emb_dim=0)
    t.resize_embeddings(4)
    assert t.emb.shape == (2, 4) and not t.emb.any()
