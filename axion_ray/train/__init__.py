"""Ray Train training of the stage models, checkpoint selection by composite score, export."""

from axion_ray.train.run import train_stage

__all__ = ["train_stage"]
