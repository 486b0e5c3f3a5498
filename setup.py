"""hourglass-jax: volumetric stacked hourglass + trajectory completion on JAX."""
from setuptools import find_packages, setup

setup(
    name="hourglass-jax",
    version="0.1.0",
    description=(
        "Single-image 3D human pose estimation that learns new poses from "
        "unlabelled monocular videos (volumetric stacked hourglass + "
        "low-rank trajectory completion), on JAX/Flax."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["completion", "completion.*", "hourglass_jax",
                                    "hourglass_jax.*", "experiments", "experiments.*"]),
    install_requires=[
        "jax>=0.7.0",
        "jaxlib>=0.7.0",
        "flax>=0.10.0",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.0",
        "numpy>=1.26",
        "scipy>=1.11",
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "tensorflow-datasets>=4.9.7",
        "array-record>=0.5",
        "grain>=0.2.4",
        "cloudpickle>=2.0",
        "etils[epath,epy]>=1.7",
        "importlib_resources>=6.0",
        "pillow>=10.0",
        "matplotlib>=3.8",
        "pybullet>=3.2.5",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "chex>=0.1.87"],
        "datasets": ["cdflib>=1.3", "h5py>=3.10", "imageio>=2.34", "imageio-ffmpeg>=0.5"],
    },
)
