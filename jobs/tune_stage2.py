"""Ray job entry point: a Ray Tune sweep (stage2) against the composite score / validation accuracy.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tune_stage2.py --train /data/train.zarr --val /data/val.zarr --samples 16 --max-concurrent 4 \
            --resources-per-trial workers=1,gpus=1 --out /runs/sweep_stage2

Takes the options of `axion-ray tune stage2`; `--resume` continues an interrupted sweep in the same --out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axion_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", "stage2", *sys.argv[1:]]))
