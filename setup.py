"""Build script of `landscape`.

The compiled extension ``landscape._C`` is optional: the package works (slower) with the
pure-PyTorch references in ``landscape/ops`` when it is missing.

- torch built with CUDA and nvcc found  -> CUDAExtension (CPU + CUDA kernels), with or
  without a GPU attached; ``-gencode`` targets from ``TORCH_CUDA_ARCH_LIST``.
- otherwise                             -> CppExtension (CPU kernels only).
- ``LANDSCAPE_NO_EXTENSION=1``           -> no extension at all.
- ``DEBUG=1``                            -> ``-O0 -g``.
- ``MAX_JOBS`` / ``NVCC_THREADS``        -> parallel compile jobs / nvcc threads.

Install against the torch already in the environment::

    pip install --no-build-isolation -e .
"""

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBRARY_NAME = "landscape"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


def _warn(message: str) -> None:
    bar = "=" * 78
    print(f"\n{bar}\nWARNING (landscape): {message}\n{bar}\n", file=sys.stderr, flush=True)


def _cuda_gencode_flags() -> list[str]:
    """``-gencode`` flags from TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0+PTX"); default sm_90."""
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0").replace(",", ";").replace(" ", ";")
    flags = []
    for arch in filter(None, arch_list.split(";")):
        ptx = arch.endswith("+PTX")
        number = arch.removesuffix("+PTX").replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def _extensions():
    if _env_flag("LANDSCAPE_NO_EXTENSION"):
        _warn("LANDSCAPE_NO_EXTENSION is set: installing without the compiled extension.")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import (
            CUDA_HOME,
            BuildExtension,
            CppExtension,
            CUDAExtension,
        )
    except Exception as error:  # torch missing at build time: pure-Python install
        _warn(
            f"torch is not importable at build time ({error}); installing without the "
            "compiled extension. Use `pip install --no-build-isolation .` with torch installed."
        )
        return [], {}

    debug = _env_flag("DEBUG")
    use_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    cxx_flags = ["-O0", "-g"] if debug else ["-O3", "-DNDEBUG"]
    cxx_flags += ["-fdiagnostics-color=always"]
    # at::parallel_for is an inline `#pragma omp parallel` in the ATen headers: without
    # -fopenmp the kernels would run on one thread. The library resolves to the libgomp that
    # torch already loaded (same soname), so there is one OpenMP runtime in the process.
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx_flags += openmp
    sources = [
        os.path.relpath(p, ROOT)
        for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))
        + sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    ]
    extra_compile_args = {"cxx": cxx_flags}
    if use_cuda:
        sources += [
            os.path.relpath(p, ROOT)
            for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
            + sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
        ]
        nvcc_flags = ["-O0", "-g", "-lineinfo"] if debug else ["-O3", "-lineinfo"]
        nvcc_flags += _cuda_gencode_flags()
        nvcc_threads = os.environ.get("NVCC_THREADS")
        if nvcc_threads:
            nvcc_flags.append(f"--threads={nvcc_threads}")
        extra_compile_args["nvcc"] = nvcc_flags
        extension = CUDAExtension
    else:
        extension = CppExtension
    ext = extension(
        name=f"{LIBRARY_NAME}._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "cpu")],
        extra_compile_args=extra_compile_args,
        extra_link_args=(["-O0", "-g"] if debug else []) + openmp,
    )

    class OptionalBuildExt(BuildExtension):
        """BuildExtension that turns a failed compile into a warning and a pure-Python install."""

        def run(self):
            try:
                super().run()
            except Exception as error:
                for ext in self.extensions:
                    self._remove_stale(ext)
                _warn(
                    f"building the compiled extension failed ({error!r}); installing the "
                    "pure-Python package, which uses the PyTorch reference ops (slower)."
                )

        def _remove_stale(self, ext):
            """A library left by an earlier build must not be packaged instead."""
            stale = self.get_ext_fullpath(ext.name)
            if os.path.exists(stale):
                os.remove(stale)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as error:
                self._remove_stale(ext)
                _warn(f"compiling {ext.name} failed ({error!r}); the pure-PyTorch reference ops will be used instead.")

    # MAX_JOBS is read by torch's ninja build; NVCC_THREADS is handled above.
    return [ext], {"build_ext": OptionalBuildExt.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _extensions()

setup(
    name=LIBRARY_NAME,
    version="0.1.0",
    description="Loss surfaces, mode connectivity, fast ensembles and Hessian spectra of "
    "saved neural-network checkpoints, with batched evaluation of many weight points.",
    packages=find_packages(include=["landscape", "landscape.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy",
        "scikit-learn",
        "pot",
        "h5py",
        "matplotlib",
        "tqdm",
        "safetensors",
    ],
    extras_require={
        "hf": ["transformers>=4.48"],
        "test": ["pytest", "ruff", "transformers>=4.48", "selenium"],
    },
    entry_points={"console_scripts": ["landscape = landscape.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    include_package_data=True,
    package_data={"landscape.plot": ["report_assets/*.js", "report_assets/*.css"]},
)
