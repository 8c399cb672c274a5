"""Build of embedcore's native extensions.

* ``embedcore._C`` (always): C++17 + OpenMP, pybind11, no torch. ``csrc/*_<isa>.cpp`` files are
  compiled once per ISA with that ISA's flags (AVX2/FMA/POPCNT; AVX-512 F/BW/VL when the compiler takes it)
  and linked together with the portable sources; the kernel table is chosen at run time, so the
  same binary runs on any x86-64.
* ``embedcore._cuda`` (when nvcc is found): ``csrc/cuda/*.cu`` compiled by nvcc, bound by
  ``csrc/cuda/bindings.cpp``, linked against the static CUDA runtime. ``EMBEDCORE_CUDA=auto|0|1``
  (auto: build if nvcc exists, warn and skip on failure; 1: required, a failure fails the build),
  ``EMBEDCORE_CUDA_ARCHS`` (default ``80;90``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
COMMON_FLAGS = ["-O3", "-fopenmp", "-fvisibility=hidden", "-Wall", "-Wno-unknown-pragmas"]

# (name, compiler flags, macro, probe program using the ISA's intrinsics). A unit's flags are what
# its level requires of every CPU it runs on; optional features (AVX-512 VPOPCNTDQ for the popcount
# kernels, VNNI for int8) are per-function target attributes, chosen at run time, so the probe
# checks that the compiler takes them too.
ISAS = [
    (
        "avx2",
        ["-mavx2", "-mfma", "-mpopcnt"],
        "EMBEDCORE_HAVE_AVX2",
        "int main() { __m256 x = _mm256_fmadd_ps(_mm256_set1_ps(1.f), _mm256_set1_ps(2.f),"
        " _mm256_setzero_ps()); return (int)_mm256_cvtss_f32(x) + (int)_mm_popcnt_u64(3); }",
    ),
    (
        "avx512",
        ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma", "-mpopcnt"],
        "EMBEDCORE_HAVE_AVX512",
        '__attribute__((target("avx512vpopcntdq"))) long long popcounts(__m512i x)'
        " { return _mm512_reduce_add_epi64(_mm512_popcnt_epi64(x)); }"
        '__attribute__((target("avx512vnni"))) int dots(__m512i x)'
        " { return _mm512_reduce_add_epi32(_mm512_dpbusd_epi32(x, x, x)); }"
        " int main() { __m512i x = _mm512_set1_epi64(3); return (int)popcounts(x) + dots(x); }",
    ),
]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _cuda_mode() -> str:
    mode = os.environ.get("EMBEDCORE_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"EMBEDCORE_CUDA must be auto, 0 or 1, got {mode!r}")
    return mode


def _find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cuda_lib_dir(nvcc: str) -> str:
    homes = [Path(os.path.realpath(nvcc)).parent.parent, Path(nvcc).parent.parent]
    homes += [Path(h) for h in (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if h]
    for home in homes:
        for candidate in (home / "lib64", home / "lib", home / "targets" / "x86_64-linux" / "lib"):
            if (candidate / "libcudart_static.a").exists():
                return str(candidate)
    raise RuntimeError(f"libcudart_static.a not found for {nvcc} (set CUDA_HOME)")


class BuildExt(build_ext):
    """build_ext with per-file flags: ISA translation units and nvcc-compiled CUDA sources."""

    def build_extensions(self) -> None:
        for ext in list(self.extensions):
            if ext.name == "embedcore._cuda" and _cuda_mode() == "auto":
                try:
                    self.build_extension(ext)
                except Exception as exc:  # optional part: the package works without it
                    self.extensions.remove(ext)
                    print(f"WARNING: embedcore._cuda not built ({exc}); CUDA search kernels disabled",
                          file=sys.stderr)
            else:
                self.build_extension(ext)

    def build_extension(self, ext) -> None:
        if ext.name == "embedcore._C":
            self._add_isa_objects(ext)
        elif ext.name == "embedcore._cuda":
            self._add_cuda_objects(ext)
        super().build_extension(ext)

    # -- CPU ISA translation units -------------------------------------------------------------
    def _compiler_accepts(self, flags: list[str], body: str) -> bool:
        """Whether the compiler builds the probe program `body` with `flags`."""
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "probe.cpp"
            src.write_text(f"#include <immintrin.h>\n{body}\n")
            try:
                self.compiler.compile([str(src)], output_dir=tmp, extra_postargs=flags)
            except Exception:
                return False
        return True

    def _add_isa_objects(self, ext) -> None:
        if not _is_x86_64():
            return
        for name, flags, macro, probe in ISAS:
            sources = sorted(CSRC.glob(f"*_{name}.cpp"))
            if not sources or not self._compiler_accepts(flags, probe):
                print(f"embedcore: compiler lacks {name}; skipping those kernels", file=sys.stderr)
                continue
            objects = self.compiler.compile(
                [_rel(s) for s in sources],
                output_dir=os.path.join(self.build_temp, name),
                include_dirs=ext.include_dirs,
                extra_postargs=ext.extra_compile_args + flags,
            )
            ext.extra_objects.extend(objects)
            ext.define_macros.append((macro, "1"))

    # -- CUDA ------------------------------------------------------------------------------------
    def _add_cuda_objects(self, ext) -> None:
        nvcc = _find_nvcc()
        if nvcc is None:
            raise RuntimeError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
        archs = [a.strip() for a in os.environ.get("EMBEDCORE_CUDA_ARCHS", "80;90").split(";") if a.strip()]
        gencode = []
        for arch in archs:
            gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX for newer GPUs
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)

        def compile_one(src: Path) -> str:
            obj = out_dir / (src.stem + ".o")
            cmd = [nvcc, "-c", str(src), "-o", str(obj), "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
                   "-I", str(CSRC / "cuda"), "--expt-relaxed-constexpr", *gencode]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"nvcc failed on {_rel(src)}:\n{result.stderr}")
            return str(obj)

        sources = sorted((CSRC / "cuda").glob("*.cu"))
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            objects = list(pool.map(compile_one, sources))
        ext.extra_objects.extend(objects)
        ext.library_dirs.append(_cuda_lib_dir(nvcc))
        ext.libraries.extend(["cudart_static", "dl", "rt", "pthread"])


def _extensions() -> list:
    portable = [s for s in sorted(CSRC.glob("*.cpp")) if not any(s.stem.endswith(f"_{n}") for n, *_ in ISAS)]
    exts = [
        Pybind11Extension(
            "embedcore._C",
            [_rel(s) for s in portable],
            include_dirs=[str(CSRC)],
            cxx_std=17,
            extra_compile_args=list(COMMON_FLAGS),
            extra_link_args=["-fopenmp"],
        )
    ]
    if _cuda_mode() == "1" or (_cuda_mode() == "auto" and _find_nvcc() is not None):
        exts.append(
            Pybind11Extension(
                "embedcore._cuda",
                [_rel(CSRC / "cuda" / "bindings.cpp")],
                include_dirs=[str(CSRC / "cuda")],
                cxx_std=17,
                extra_compile_args=["-O2", "-fvisibility=hidden"],
            )
        )
    return exts


setup(
    # embedcore/kernels is a relative symlink to the top-level kernels/ folder, which has no
    # __init__.py: a checkout's root on sys.path must never shadow Hugging Face's `kernels` package.
    packages=["embedcore", "embedcore.ops", "embedcore.models", "embedcore.kernels"],
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
