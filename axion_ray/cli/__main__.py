"""`python -m axion_ray.cli …`, the same as `axion-ray …`."""

import sys

from axion_ray.cli import main

sys.exit(main())
