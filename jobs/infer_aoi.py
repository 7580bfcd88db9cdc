"""Ray job entry point: streaming multi-stage inference over an AOI tile store.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/infer_aoi.py /data/aoi.zarr --stages 1,2,3 --stage2-checkpoint /models/stage2.pt

Takes exactly the options of `axion-ray infer`; inside a job, Ray's address comes from $RAY_ADDRESS.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the job's working dir holds the package

from axion_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
