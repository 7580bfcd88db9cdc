"""Ray Tune sweeps against the composite score (Stage 2 training, Stage 3 inference knobs, classifiers)."""
