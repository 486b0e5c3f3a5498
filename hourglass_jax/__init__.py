"""hourglass-jax: volumetric stacked hourglass networks for 3D human pose, on JAX/Flax."""
