"""``perception batch``: the same processing as ``perception run`` over many recorded drives, on Ray.

:mod:`.inputs` (drives, output folders, content hashes, manifests), :mod:`.drive` (one drive, no Ray),
:mod:`.summary` (a drive's summary, the report), :mod:`.fleet` (the Ray part: actor pool, drive tasks),
:mod:`.progress` (the progress line). Only :mod:`.fleet` imports Ray.
"""
