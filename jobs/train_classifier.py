"""Ray job entry point: the inspection classifier's two-stage workflow (or one step of it) on Ray Train.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train_classifier.py two-stage --data /data/fruit --model convnextv2_tiny --out /runs/cls --gpu

Takes the options of `axion-ray classify` (two-stage, train, mine, thresholds, report, infer, latency, compare).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axion_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["classify", *sys.argv[1:]]))
