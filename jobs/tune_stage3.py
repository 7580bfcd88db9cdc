"""Ray job entry point: a Ray Tune sweep (stage3) against the composite score / validation accuracy.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tune_stage3.py --store /data/val.zarr --timesteps 1,2,5,10,20 --out /runs/sweep_stage3

Takes the options of `axion-ray tune stage3`; `--resume` continues an interrupted sweep in the same --out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axion_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", "stage3", *sys.argv[1:]]))
