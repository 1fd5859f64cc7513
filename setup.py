"""Installs `transformer`: the Transformer of "Attention Is All You Need" and the LLM pipeline
around it."""

from setuptools import find_packages, setup

setup(
    name="transformer",
    version="0.1.0",
    description="JAX/Flax Transformer (Vaswani et al., 2017) with pretraining, fine-tuning "
                "and a reward stage.",
    python_requires=">=3.11",
    packages=find_packages(include=["transformer", "transformer.*"]),
    install_requires=[
        "jax>=0.10.2,<0.12",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "tensorflow-datasets>=4.9.10,<4.10",
        "grain>=0.2.18,<0.3",
        "array-record>=0.8.6,<0.9",
        "absl-py>=2.1,<3",
        "sentencepiece>=0.2.0,<0.3",
        "ml-collections>=1.0,<2",
        "numpy>=1.26",
        "sacrebleu>=2.4,<3",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.10",
                 "ipykernel>=6.29", "ruff>=0.6"],
        "tpu": ["jax[tpu]>=0.10.2,<0.12"],      # TPU VMs and Colab TPU runtimes (libtpu)
        "cuda": ["jax[cuda]>=0.10.2,<0.12"],    # NVIDIA GPUs (CUDA 12 wheels)
    },
)
