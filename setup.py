"""vidgen: a JAX/Flax framework for Sora-style text-to-video models."""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.12",
    "optax",
    "orbax-checkpoint",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",  # used without TensorFlow: builders + array_record
    "importlib_resources",  # TFDS needs it to build data sets, declares it only for Python < 3.9
    "array_record",
    "einops",
    "sentencepiece",
    "absl-py",
    "ml_collections",
    "numpy",
    "pillow",  # resizing frames, PNG contact sheets
    "av",  # PyAV: decoding and encoding mp4/webm/avi/gif
    "tqdm",
    "tensorboardX",
    "dm-pix",  # PSNR and SSIM in JAX (DeepMind), for VAE evaluation
]

setuptools.setup(
    name="vidgen",
    version="0.1.0",
    description="Train and sample Sora-style text-to-video models in JAX/Flax.",
    packages=setuptools.find_packages(include=["vidgen", "vidgen.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest", "pytest-xdist", "chex", "portpicker"],
        # Peer implementations for parity tests and benchmarks. torch is pinned
        # to the CPU build the development machines carry.
        "interop": ["torch==2.13.0", "diffusers", "transformers"],
        # Compiling for TPU topologies (vidgen.aot) and running on TPU VMs. jax's own
        # `tpu` extra pins jaxlib and libtpu to exactly the installed jax release
        # (jax 0.10.2: libtpu 0.0.42.*), so the pair always matches; the bound is
        # install_requires' own, so this never moves jax to another release.
        "tpu": ["jax[tpu]>=0.10"],
    },
)
