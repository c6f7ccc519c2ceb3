"""The package's compiled TensorFlow kernels (CPU), built from their C++ sources with the machine's compiler.

`make install` builds them (`python -m deepfm_model.kernels`); a kernel not built yet is built on first use.
Each library is named for its source, the TensorFlow version and the compile flags, so a changed source or a
new TensorFlow builds afresh. Where a kernel cannot be built or loaded (no C++ compiler, say), `load` warns
once and returns `None`, and callers take their TensorFlow-op path: slower, same arithmetic.

Settings (`config.KernelSettings`, from the environment): `CXX` (the compiler, default `c++`); `DEEPFM_KERNEL_DIR`
(where libraries are kept, default `_build/` beside the sources); `DEEPFM_KERNELS=0` turns the kernels off (the
TensorFlow-op paths run).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import subprocess
import sys
from pathlib import Path

from deepfm_model.config import KernelSettings
from deepfm_model.spec.files import staged_path

SOURCES = Path(__file__).resolve().parent
KERNELS = ("lazy_adam", "field_embedding", "fm_interaction")
OPTIMISATION = ("-O3", "-shared", "-fPIC", "-w")
logger = logging.getLogger(__name__)


class KernelBuildError(RuntimeError):
    """A kernel's source did not compile (the compiler's message is in the text)."""


def _flags() -> list[str]:
    import tensorflow as tf

    return [*OPTIMISATION, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def library_path(name: str) -> Path:
    """Where the library of kernel `name` for this source, TensorFlow and compile flags lives."""
    import tensorflow as tf

    key = hashlib.sha256()
    for part in ((SOURCES / f"{name}.cc").read_bytes(), tf.__version__.encode(), " ".join(_flags()).encode()):
        key.update(part + b"\0")
    folder = KernelSettings.from_env().directory or SOURCES / "_build"
    return folder / f"{name}-{key.hexdigest()[:16]}.so"


def build(name: str) -> Path:
    """Compile kernel `name` unless its library is there already; returns the library's path."""
    path = library_path(name)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler = KernelSettings.from_env().compiler
    # Compiled beside its destination and renamed: a process never loads a half-written library.
    with staged_path(path) as partial:
        command = [compiler, str(SOURCES / f"{name}.cc"), "-o", str(partial), *_flags()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise KernelBuildError(f"Cannot run the C++ compiler `{compiler}` (set CXX): {error}") from error
        if result.returncode != 0:
            raise KernelBuildError(f"`{' '.join(command)}` failed:\n{result.stderr[-3000:]}")
    return path


@functools.cache
def load(name: str):
    """The op module of kernel `name` (building it first if needed), or `None` where it cannot be had."""
    if not KernelSettings.from_env().enabled:
        return None
    import tensorflow as tf

    try:
        if not library_path(name).exists():
            logger.info("Building the `%s` kernel (once per source and TensorFlow version)...", name)
        return tf.load_op_library(str(build(name)))
    except (KernelBuildError, tf.errors.NotFoundError, OSError) as error:
        logger.warning("The `%s` kernel is not available; TensorFlow ops run instead (slower). %s", name, error)
        return None


def main() -> int:
    for name in KERNELS:
        try:
            print(f"{name}: {build(name)}")
        except KernelBuildError as error:
            print(f"{name}: not built. {error}", file=sys.stderr)
            return 1
    return 0
