"""Ray job entry point: Stage 3 training on Ray Train (LoRA on TerraMind).

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train_stage3.py --train /data/train.zarr --val /data/val.zarr --out /runs/s3 --workers 4 --gpu

Takes the options of `axion-ray train stage3`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axion_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "stage3", *sys.argv[1:]]))
