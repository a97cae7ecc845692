"""The fast CPU backend: channels-last C++ sampling kernels compiled on first use, oneDNN for the GEMMs.

Forward, per tile of output pixels: a kernel writes the bilinear samples (times the mask) of every tap and offset
group into a channels-last image enlarged ``kh x kw`` times (the sample of output pixel ``(ho, wo)``, tap ``(i, j)``
at ``(ho * kh + i, wo * kw + j)``), and a dense ``kh x kw`` conv with stride ``(kh, kw)`` of that image, run by
oneDNN as fast as the plain conv, is the deformable conv. Channels last makes the ``C / G`` channels of an offset
group one contiguous run that the compiler vectorises.

Backward, per tile: the samples are recomputed (memory as torchvision's op) as im2col rows for the weight gradient
(one GEMM), a transposed strided conv gives the samples' gradient, and a second kernel turns it into the input,
offset and mask gradients in one pass.

The kernels (``csrc/deform_conv_cpu.cpp``) include no PyTorch header: they compile in seconds with the system's C++
compiler (``$CXX``, else ``c++``) and load through :mod:`ctypes`. The library is cached under ``$FAPN_CACHE_DIR``
(default ``~/.cache/fapn``, else a per-user temporary folder), keyed by the source, the flags, the compiler and the
CPU. Without a compiler, or if the build fails, :func:`load_kernels` returns ``None`` and
:func:`deform_conv2d_cpu` computes with the pure-PyTorch backend instead (with one warning): the op always works.
docs/deform_conv.md has the measurements behind each choice.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from fapn.ops.deform_conv_pytorch import check_shapes, deform_conv2d_pytorch

__all__ = ["deform_conv2d_cpu", "load_kernels", "kernels_available", "SOURCE"]

SOURCE = Path(__file__).with_name("csrc") / "deform_conv_cpu.cpp"
_ABI_VERSION = 12
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-march=native", "-fopenmp"),  # vectorised for this CPU (the cache key includes the CPU)
    ("-fopenmp",),  # a compiler that does not know -march=native
    (),  # no OpenMP: single-threaded kernels, still several times faster than the other backends
)
# -fno-trapping-math lets the compiler vectorise std::floor (no program here reads the FP exception flags); it
# changes no result: no reassociation, no contraction beyond the default.
_COMMON_FLAGS = ("-O3", "-fno-trapping-math", "-shared", "-fPIC", "-std=c++17")
_KERNEL_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}
_BACKWARD_DTYPE = {torch.float32: torch.float32, torch.float64: torch.float64, torch.bfloat16: torch.float32}
_IMAGE_LAYOUT, _ROWS_LAYOUT = 0, 1  # the samples layouts of csrc/deform_conv_cpu.cpp


MARCH_ENV_VAR = "FAPN_KERNEL_MARCH"
"""``-march`` target for the kernels instead of ``native`` (e.g. ``haswell``: AVX2 and FMA, no AVX-512). Building
for an older instruction set than the host's runs the code an AVX2-only machine runs, on this one: that is how the
tests and benchmarks check that path. Empty or unset: ``native``."""


def _flag_sets() -> tuple[tuple[str, ...], ...]:
    march = os.environ.get(MARCH_ENV_VAR)
    if not march:
        return _FLAG_SETS
    return ((f"-march={march}", "-fopenmp"), *_FLAG_SETS[1:])


def _cache_dirs() -> list[Path]:
    """Where the compiled library may live: the user's cache, then a per-user temporary folder (read-only home)."""
    root = os.environ.get("FAPN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fapn"
    )
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return [Path(root), Path(tempfile.gettempdir()) / f"fapn-cache-{user}"]


def _cpu_fingerprint() -> str:
    # -march=native code must not run on another CPU that shares the cache (a network home directory).
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + platform.processor() + "".join(lines)


def _compile(compiler: str, flags: tuple[str, ...], target: Path) -> bool:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError:  # not writable
        return False
    cmd = [compiler, *flags, *_COMMON_FLAGS, str(SOURCE), "-o", tmp]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            return False
        os.replace(tmp, target)  # atomic: concurrent processes never load a half-written library
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i64p, c_int = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int
    for suffix in _KERNEL_SUFFIX.values():
        im2col = getattr(lib, f"fapn_dcn_im2col_{suffix}")
        im2col.argtypes = [i64p, c_int, ctypes.c_int64, ctypes.c_int64, ptr, ptr, ptr, ptr, c_int]
        im2col.restype = None
        if suffix == "bf16":
            continue
        col2im = getattr(lib, f"fapn_dcn_col2im_{suffix}")
        col2im.argtypes = [i64p, c_int, ctypes.c_int64, ctypes.c_int64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, c_int]
        col2im.restype = None
    lib.fapn_dcn_abi_version.restype = c_int
    if lib.fapn_dcn_abi_version() != _ABI_VERSION:
        raise OSError("stale deformable-conv kernel library")
    return lib


@functools.cache
def load_kernels() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; ``None`` when they cannot be built or loaded."""
    if os.environ.get("FAPN_NO_CPU_KERNELS"):
        return None
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")
    if compiler is None or not SOURCE.exists():
        return None
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for flags in _flag_sets():
        key = hashlib.sha256(
            b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_fingerprint().encode()])
        ).hexdigest()[:16]
        for cache in _cache_dirs():
            target = cache / f"deform_conv_cpu-{key}.so"
            if not target.exists() and not _compile(compiler, flags, target):
                continue
            try:
                return _bind(ctypes.CDLL(str(target)))
            except (OSError, AttributeError):
                continue
    return None


def kernels_available() -> bool:
    """Whether the compiled kernels load here (compiling them if needed)."""
    return load_kernels() is not None


SAMPLE_TILE_BYTES = 8 << 20
"""Size of the samples buffer. The work is cut into tiles whose samples fit in it: several whole images per tile
for small maps (fewer, larger GEMMs), a band of output rows of one image for large ones. This bounds the memory
(the samples of a map are ``kh * kw`` times its size) and keeps the data in cache."""


def _tiles(N: int, H_out: int, sample_row_bytes: int) -> list[tuple[int, int, int, int]]:
    """``(n_begin, n_end, row_begin, row_end)`` tiles covering ``N`` images of ``H_out`` output rows."""
    rows = max(1, SAMPLE_TILE_BYTES // sample_row_bytes)
    if rows >= H_out:
        images = max(1, rows // H_out)
        return [(n, min(N, n + images), 0, H_out) for n in range(0, N, images)]
    return [(n, n + 1, r, min(H_out, r + rows)) for n in range(N) for r in range(0, H_out, rows)]


class _DeformConv2dCPU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        input: Tensor,
        offset: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        mask: Tensor | None,
        geometry: tuple[int, ...],
    ) -> Tensor:
        lib = load_kernels()
        assert lib is not None
        N, C, _H, _W = input.shape
        C_out, _, kh, kw = weight.shape
        H_out, W_out = geometry[6], geometry[7]
        image = input.permute(0, 2, 3, 1).contiguous()  # a no-op for a channels-last input
        # offset and mask are read in place (FaPN passes channel slices of one channels-last tensor): only a
        # layout whose pixels are not one stride apart is copied
        offset, mask = _pixel_strided(offset), _pixel_strided(mask) if mask is not None else None
        strides = (*offset.stride()[1:4:2], *(mask.stride()[1:4:2] if mask is not None else (0, 0)))
        shape = (ctypes.c_int64 * 18)(*geometry, *strides)
        tiles = _tiles(N, H_out, kh * W_out * kw * C * input.element_size())
        largest = max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in tiles)
        buffer = input.new_empty(largest * kh * W_out * kw * C)
        channels_last = input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        im2col = getattr(lib, f"fapn_dcn_im2col_{_KERNEL_SUFFIX[input.dtype]}")
        threads = torch.get_num_threads()
        out: Tensor | None = None
        for n0, n1, r0, r1 in tiles:
            # [images, rows * kh, W_out * kw, C]: a channels-last batch for one strided dense conv
            samples = buffer[: (n1 - n0) * (r1 - r0) * kh * W_out * kw * C].view(n1 - n0, (r1 - r0) * kh, W_out * kw, C)
            for n in range(n0, n1):
                mask_ptr = mask[n].data_ptr() if mask is not None else None
                im2col(shape, _IMAGE_LAYOUT, r0, r1, image[n].data_ptr(), offset[n].data_ptr(), mask_ptr,
                       samples[n - n0].data_ptr(), threads)  # fmt: skip
            result = F.conv2d(samples.permute(0, 3, 1, 2), weight, bias, stride=(kh, kw))  # channels last
            if len(tiles) == 1:  # the usual case: no copy into a separate output
                out = result.contiguous(memory_format=memory_format)
                break
            if out is None:
                out = torch.empty(N, C_out, H_out, W_out, dtype=input.dtype, memory_format=memory_format)
            out[n0:n1, :, r0:r1] = result
        assert out is not None
        ctx.save_for_backward(image, offset, mask, weight)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        lib = load_kernels()
        assert lib is not None
        image, offset, mask, weight = ctx.saved_tensors
        dtype = image.dtype
        if _BACKWARD_DTYPE[dtype] != dtype:
            # bfloat16: the gradients are sums over many samples (the input's over every tap that reads a pixel,
            # the weight's over every output pixel), which bfloat16's 8-bit mantissa would round away; they are
            # computed in float32 from the bfloat16 values and cast back, as autocast does for torchvision's op.
            image, offset, weight, grad_out = (t.float() for t in (image, offset, weight, grad_out))
            mask = mask.float() if mask is not None else None
        offset = offset.contiguous()
        mask = mask.contiguous() if mask is not None else None
        N, _H, _W, C = image.shape
        C_out, _, kh, kw = weight.shape
        H_out, W_out = ctx.geometry[6], ctx.geometry[7]
        suffix = _KERNEL_SUFFIX[image.dtype]
        im2col, col2im = getattr(lib, f"fapn_dcn_im2col_{suffix}"), getattr(lib, f"fapn_dcn_col2im_{suffix}")
        pixels = H_out * W_out
        shape = (ctypes.c_int64 * 18)(*ctx.geometry, pixels, 1, pixels, 1)  # contiguous offset and mask
        threads = torch.get_num_threads()
        need_input, need_offset, need_weight, need_bias, need_mask = ctx.needs_input_grad[:5]
        need_sampling = need_input or need_offset or need_mask

        grad_out = grad_out.contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout
        grad_image = torch.zeros_like(image)
        grad_offset = torch.empty_like(offset)
        grad_mask = torch.empty_like(mask) if mask is not None else None
        grad_weight_rows = weight.new_zeros(C_out, kh * kw * C) if need_weight else None
        tiles = _tiles(N, H_out, kh * W_out * kw * C * image.element_size())
        largest = max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in tiles)
        buffer = image.new_empty(largest * kh * W_out * kw * C)
        for n0, n1, r0, r1 in tiles:
            grad_tile = grad_out[n0:n1, :, r0:r1]
            pixels = (r1 - r0) * W_out
            if grad_weight_rows is not None:
                # The samples are recomputed, not saved by the forward (they are kh * kw times the input), as
                # im2col rows: one GEMM then gives the weight gradient, 5x faster than oneDNN's weight gradient
                # of the strided conv.
                rows = buffer[: (n1 - n0) * pixels * kh * kw * C].view(n1 - n0, pixels, kh * kw * C)
                for n in range(n0, n1):
                    mask_ptr = mask[n].data_ptr() if mask is not None else None
                    im2col(shape, _ROWS_LAYOUT, r0, r1, image[n].data_ptr(), offset[n].data_ptr(), mask_ptr,
                           rows[n - n0].data_ptr(), threads)  # fmt: skip
                # [C_out, images * pixels] (a view: grad_out is channels-last) times [images * pixels, kh*kw*C]
                grad_weight_rows.addmm_(grad_tile.permute(1, 0, 2, 3).flatten(1), rows.view(-1, kh * kw * C))
            if need_sampling:
                grad_samples = F.conv_transpose2d(grad_tile, weight, stride=(kh, kw))  # image layout
                grad_samples = grad_samples.permute(0, 2, 3, 1).contiguous()
                for n in range(n0, n1):
                    mask_ptr = mask[n].data_ptr() if mask is not None else None
                    grad_mask_ptr = grad_mask[n].data_ptr() if grad_mask is not None else None
                    col2im(shape, _IMAGE_LAYOUT, r0, r1, image[n].data_ptr(), offset[n].data_ptr(), mask_ptr,
                           grad_samples[n - n0].data_ptr(), grad_image[n].data_ptr(), grad_offset[n].data_ptr(),
                           grad_mask_ptr, threads)  # fmt: skip

        grad_weight = None
        if grad_weight_rows is not None:
            grad_weight = grad_weight_rows.view(C_out, kh, kw, C).permute(0, 3, 1, 2).contiguous()

        # a channels-last view, no copy: autograd takes gradients of any layout
        grad_input = grad_image.permute(0, 3, 1, 2) if need_input else None
        grad_bias = grad_out.sum((0, 2, 3)) if need_bias and ctx.has_bias else None
        grads = (grad_input, grad_offset if need_offset else None, grad_weight, grad_bias,
                 grad_mask if need_mask else None)  # fmt: skip
        return (*(g.to(dtype) if g is not None else None for g in grads), None)


_warned = False


def deform_conv2d_cpu(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution with the compiled CPU kernels (float32/float64/bfloat16 CPU tensors, conv groups 1).

    bfloat16 samples in float32 arithmetic and rounds each sample once; its backward runs in float32 (the
    gradients are long sums) and casts back. Under CPU autocast every floating input is cast to the autocast dtype
    first, so a bfloat16 autocast region runs the bfloat16 kernels (as it runs the dense convs in bfloat16).
    Anything else (another device or dtype, mixed dtypes, grouped weights, kernels that did not build) is computed
    by :func:`fapn.ops.deform_conv_pytorch.deform_conv2d_pytorch`, so a call never fails for want of a compiler.

    Args:
        input, offset, weight, bias, stride, padding, dilation, mask: as :func:`fapn.ops.deform_conv2d`.

    Returns:
        ``[N, C_out, H_out, W_out]``.

    Example:
        >>> x, w = torch.randn(1, 8, 5, 5), torch.randn(4, 8, 3, 3)
        >>> deform_conv2d_cpu(x, torch.zeros(1, 18, 5, 5), w, padding=1).shape
        torch.Size([1, 4, 5, 5])
    """
    global _warned
    if input.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        with torch.autocast("cpu", enabled=False):
            return deform_conv2d_cpu(
                input.to(dtype), offset.to(dtype), weight.to(dtype), bias.to(dtype) if bias is not None else None,
                stride, padding, dilation, mask.to(dtype) if mask is not None else None,
            )  # fmt: skip
    tensors = [t for t in (input, offset, weight, bias, mask) if t is not None]
    usable = (
        input.device.type == "cpu"
        and input.dtype in _KERNEL_SUFFIX
        and all(t.device.type == "cpu" and t.dtype == input.dtype for t in tensors)
        and weight.shape[1] == input.shape[1]
        and input.shape[0] > 0  # an empty batch: nothing to tile, the pure-PyTorch op returns the empty output
    )
    if usable and load_kernels() is None:
        if not _warned:
            warnings.warn(
                "fapn: the C++ deformable-conv kernels could not be built (no C++ compiler?); "
                "using the pure-PyTorch backend instead",
                RuntimeWarning,
                stacklevel=2,
            )
            _warned = True
        usable = False
    if not usable:
        return deform_conv2d_pytorch(input, offset, weight, bias, stride, padding, dilation, mask)
    geometry = _geometry(input, offset, weight, mask, _pair(stride), _pair(padding), _pair(dilation))
    return _DeformConv2dCPU.apply(input, offset, weight, bias, mask, geometry)


def _pixel_strided(t: Tensor) -> Tensor:
    """``t`` ``[N, C, H, W]`` itself when its pixels ``(h, w)`` are one stride apart (``stride(h) = W * stride(w)``:
    NCHW, channels last and their channel slices), else a contiguous copy."""
    return t if t.stride(2) == t.shape[3] * t.stride(3) or t.shape[2] == 1 else t.contiguous()


def _geometry(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    mask: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, ...]:
    _N, C, H, W = input.shape
    kh, kw = weight.shape[-2:]
    G, H_out, W_out = check_shapes(input, offset, weight, mask, stride, padding, dilation)
    return (C, H, W, G, kh, kw, H_out, W_out, *stride, *padding, *dilation)
