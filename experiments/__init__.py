"""absl + ml_collections experiment launchers for the two-stage method."""
