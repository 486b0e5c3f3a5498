"""Test setup: 8 CPU devices for the multi-device tests, float32 by default."""
import os

# Must happen before JAX is imported anywhere: gives 8 host devices for shard_map tests.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
