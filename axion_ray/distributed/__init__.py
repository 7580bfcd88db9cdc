"""Ray, our way: the session (`init_ray`, CPU shares) and Ray Data's I/O door onto tile stores.

Like Ray Data's own `read_api`: a thin public `read_tile_store()` / `write_tile_store()` over a private
datasource and datasink. Every package that starts Ray or streams tiles goes through here.
"""

from axion_ray.distributed.columns import ROW_DONE, ROW_FAILED, ROW_NO_DATA, ROW_NOT_RUN
from axion_ray.distributed.session import READ_TASK_CPUS, cluster_cpus, cpu_share, init_ray, worker_cpus
from axion_ray.distributed.tile_io import read_tile_store, write_tile_store

__all__ = ["READ_TASK_CPUS", "ROW_DONE", "ROW_FAILED", "ROW_NOT_RUN", "ROW_NO_DATA", "cluster_cpus", "cpu_share",
           "init_ray", "read_tile_store", "worker_cpus", "write_tile_store"]
