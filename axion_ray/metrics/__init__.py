"""Metrics with the docs/ARCHITECTURE.md §6 names: spectral, geometry, composite, classification."""

from axion_ray.metrics.classification import classification_metrics, confusion_matrix
from axion_ray.metrics.composite import CompositeResult, composite_score
from axion_ray.metrics.geometry import GeometryAccumulator, geometry_metrics
from axion_ray.metrics.spectral import SpectralAccumulator, evi, ndvi, spectral_angle, spectral_metrics, ssim_per_tile

__all__ = [
    "CompositeResult", "GeometryAccumulator", "SpectralAccumulator", "classification_metrics", "composite_score",
    "confusion_matrix", "evi", "geometry_metrics", "ndvi", "spectral_angle", "spectral_metrics", "ssim_per_tile",
]
