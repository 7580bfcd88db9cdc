"""Ray job entry point: a Ray Tune sweep (classifier) against the composite score / validation accuracy.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tune_classifier.py --data /data/fruit --models convnextv2_tiny,efficientnet_b2 --samples 12 \
            --resources-per-trial workers=1,gpus=1 --out /runs/sweep_classifier

Takes the options of `axion-ray tune classifier`; `--resume` continues an interrupted sweep in the same --out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axion_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", "classifier", *sys.argv[1:]]))
