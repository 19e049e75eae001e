"""Packaging for the three parts: beam_pipelines, trainer and conversion.

Extras keep each machine lean:
  pip install .[pipeline]    # Dataflow workers: Beam, tokenizers, zstandard (no torch, no Keras)
  pip install .[trainer]     # TPU VMs: TensorFlow, Keras 3 (no Beam)
  pip install .[conversion]  # the converter: torch (CPU), transformers
  pip install .[dev]         # everything above plus the test and benchmark tools
The pins are a set known to resolve together on Python 3.11.

Dataflow workers install this package from ``--setup_file=./setup.py`` with its
``install_requires`` only (no extras; Beam itself is in the worker image), so what the
pipeline's DoFns import on a worker (tokenizers, zstandard) is listed there. Both are small
and pull neither Beam nor torch, so a TPU VM stays lean too.
"""

from setuptools import find_packages, setup

WORKER = [
    "numpy",
    "tokenizers==0.23.3",
    "zstandard==0.25.0",
]
PIPELINE = ["apache-beam[gcp]==2.77.0", "matplotlib==3.11.2"]  # plots drawn by the launcher
TRAINER = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "safetensors==0.8.0",
]
CONVERSION = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "safetensors==0.8.0",
]
GCS = ["google-cloud-storage==3.17.1"]
DEV = [
    "pytest==9.2.0",
    "ruff==0.17.5",
    "psutil==7.2.2",
    "matplotlib==3.11.2",
    "gcp-storage-emulator==2026.7.19",
    "tensorflow-transform==1.21.0",
    "jax[cpu]==0.10.2",
]

setup(
    name="hindi-bert",
    version="0.1.0",
    description="Train a BERT language model from scratch: OSCAR text to a Hugging Face model.",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["beam_pipelines*", "trainer*", "conversion*"]),
    package_data={"beam_pipelines": ["sample_data/*"]},
    install_requires=WORKER,
    extras_require={
        "pipeline": PIPELINE + GCS,
        "trainer": TRAINER,
        "conversion": CONVERSION + TRAINER,
        "dev": sorted(set(PIPELINE + TRAINER + CONVERSION + GCS + DEV)),
    },
    entry_points={
        "console_scripts": [
            "bert-build-data=beam_pipelines.build:main",
            "bert-train=trainer.task:main",
            "bert-convert=conversion.convert:main",
        ]
    },
)
