"""The columns a stage adds to each row of a tile batch, which `write_tile_store` writes.

Per stage k: the stage's output array (named as in `models/registry.py`), `status_<k>` (`ROW_DONE` /
`ROW_FAILED`, `ROW_NO_DATA` for a row without a valid pixel, `ROW_NOT_RUN` when the stage did not
run for the row), `reason_<k>`, `ms_<k>`,
`device_<k>`, `node_<k>`, `fallback_<k>`. The pipeline's read adds a `run_<k>` flag per stage.
"""

from __future__ import annotations

ROW_NOT_RUN, ROW_DONE, ROW_FAILED, ROW_NO_DATA = 0, 1, 2, 3
