"""Backend choice, fallbacks, dtypes, memory formats and export of fapn.ops.deform_conv2d."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import fapn.ops.deform_conv_cpu as cpu_backend
from fapn.layers import ModulatedDeformConv2d
from fapn.ops import BACKEND_ENV_VAR, BACKENDS, default_backend, deform_backend, deform_conv2d, resolve_backend


def _inputs(
    seed: int = 0, dtype: torch.dtype = torch.float32, N: int = 2, C: int = 16, H: int = 10, W: int = 12, G: int = 4
):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g).to(dtype)
    offset = (torch.randn(N, 2 * G * 9, H, W, generator=g) * 2).to(dtype)
    mask = torch.rand(N, G * 9, H, W, generator=g).to(dtype)
    weight = (torch.randn(8, C, 3, 3, generator=g) / (9 * C) ** 0.5).to(dtype)
    bias = torch.randn(8, generator=g).to(dtype)
    return x, offset, weight, bias, mask


def _relative_error(a: Tensor, b: Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_backends_listed() -> None:
    assert {"torchvision", "pytorch", "cpu"} <= set(BACKENDS)


def test_default_backend_by_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    assert default_backend(torch.device("cpu")) == ("cpu" if cpu_backend.kernels_available() else "pytorch")
    assert default_backend("cuda") == "torchvision"
    assert default_backend("meta") == "pytorch"


def test_environment_variable_selects_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(BACKENDS, "pytorch", lambda *args: calls.append("pytorch") or torch.zeros(()))
    monkeypatch.setenv(BACKEND_ENV_VAR, "pytorch")
    assert default_backend("cpu") == "pytorch"
    x, offset, weight, bias, mask = _inputs()
    deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    assert calls == ["pytorch"]


def _recording_backends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every backend by one that records its name: which backend ran, without computing."""
    calls: list[str] = []
    for name in list(BACKENDS):
        monkeypatch.setitem(BACKENDS, name, lambda *args, _name=name: calls.append(_name) or torch.zeros(()))
    return calls


def test_one_rule_block_then_argument_then_environment_then_automatic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    calls = _recording_backends(monkeypatch)
    x, offset, weight, bias, mask = _inputs()
    layer = ModulatedDeformConv2d(16, 8, 3, padding=1, offset_groups=4, backend="cpu")
    run = lambda backend=None: deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend=backend)  # noqa: E731
    run()  # 4. automatic: the device's default
    run("torchvision")  # 2. the call's argument
    layer(x, offset, mask)  # 2. the layer's argument
    monkeypatch.setenv(BACKEND_ENV_VAR, "torchvision")
    run()  # 3. the environment beats the automatic choice ...
    run("pytorch")  # ... but not an argument
    with deform_backend("pytorch"):  # 1. a block beats everything
        run("torchvision"), layer(x, offset, mask), run()
        with deform_backend("torchvision"):  # the innermost block wins
            run()
            with deform_backend(None):  # None: back to the normal rules
                layer(x, offset, mask)
        run()
    run()  # restored on exit
    automatic = "cpu" if cpu_backend.kernels_available() else "pytorch"
    assert calls == [
        automatic,
        "torchvision",
        "cpu",
        "torchvision",
        "pytorch",
        "pytorch",
        "pytorch",
        "pytorch",
        "torchvision",
        "cpu",
        "pytorch",
        "torchvision",
    ]


def test_block_is_local_to_its_thread_and_restored_after_an_error() -> None:
    import threading

    seen: list[str] = []
    with deform_backend("torchvision"):
        worker = threading.Thread(target=lambda: seen.append(resolve_backend("pytorch", "cpu")))
        worker.start()
        worker.join()
        assert resolve_backend("pytorch", "cpu") == "torchvision"
    assert seen == ["pytorch"]  # the other thread never saw this thread's block
    with pytest.raises(RuntimeError, match="boom"), deform_backend("torchvision"):
        raise RuntimeError("boom")
    assert resolve_backend("pytorch", "cpu") == "pytorch"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_empty_batch_gives_an_empty_output_and_gradient(backend: str) -> None:
    x, offset, weight, bias, mask = _inputs()
    x, offset, mask = x[:0].requires_grad_(), offset[:0], mask[:0]
    out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend=backend)
    out.sum().backward()
    assert out.shape == (0, 8, 10, 12) and x.grad is not None and x.grad.shape == x.shape


def test_unknown_names_are_refused_where_they_are_given() -> None:
    with (
        pytest.raises(ValueError, match=r"unknown deformable-conv backend 'cuda'; valid backends: \['cpu', "),
        deform_backend("cuda"),
    ):
        pass
    with pytest.raises(ValueError, match="valid backends"):
        ModulatedDeformConv2d(8, 8, backend="fast")


def test_unknown_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    x, offset, weight, bias, mask = _inputs()
    with pytest.raises(ValueError, match="valid backends"):
        deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend="cudnn")
    monkeypatch.setenv(BACKEND_ENV_VAR, "fast")
    with pytest.raises(ValueError, match=BACKEND_ENV_VAR):
        deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)


def test_bad_offset_shape_is_a_clear_error() -> None:
    x, offset, weight, bias, mask = _inputs()
    for backend in ("pytorch", "cpu"):
        with pytest.raises(ValueError, match="offset must be"):
            deform_conv2d(x, offset[:, :, :-1], weight, bias, padding=1, mask=mask, backend=backend)


def test_cpu_backend_without_compiler_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No compiler: the kernels do not build, the op still works (pure PyTorch) and says so once."""
    monkeypatch.setenv("FAPN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_backend.shutil, "which", lambda name: None)
    monkeypatch.setattr(cpu_backend, "_warned", False)
    cpu_backend.load_kernels.cache_clear()
    try:
        assert cpu_backend.load_kernels() is None
        monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
        assert default_backend("cpu") == "pytorch"
        x, offset, weight, bias, mask = _inputs()
        with pytest.warns(RuntimeWarning, match="pure-PyTorch"):
            out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend="cpu")
        expected = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend="torchvision")
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        assert not list(tmp_path.iterdir())
    finally:
        cpu_backend.load_kernels.cache_clear()


@pytest.mark.skipif(not cpu_backend.kernels_available(), reason="no C++ compiler here")
def test_kernels_compile_once_into_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FAPN_CACHE_DIR", str(tmp_path))
    cpu_backend.load_kernels.cache_clear()
    try:
        assert cpu_backend.load_kernels() is not None
        libraries = list(tmp_path.glob("deform_conv_cpu-*.so"))
        assert len(libraries) == 1
        cpu_backend.load_kernels.cache_clear()
        monkeypatch.setattr(cpu_backend, "_compile", lambda *a: pytest.fail("compiled again despite the cache"))
        assert cpu_backend.load_kernels() is not None
    finally:
        cpu_backend.load_kernels.cache_clear()


@pytest.mark.skipif(not cpu_backend.kernels_available(), reason="no C++ compiler here")
def test_a_library_built_for_one_cpu_is_never_loaded_on_another(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """-march=native code is keyed by the CPU's model and flags: another CPU (an AVX2-only host sharing the cache)
    compiles its own library instead of loading one that may use instructions it lacks."""
    monkeypatch.setenv("FAPN_CACHE_DIR", str(tmp_path))
    cpu_backend.load_kernels.cache_clear()
    try:
        assert cpu_backend.load_kernels() is not None
        monkeypatch.setattr(cpu_backend, "_cpu_fingerprint", lambda: "x86_64 model name: other CPU flags: avx2 fma")
        cpu_backend.load_kernels.cache_clear()
        assert cpu_backend.load_kernels() is not None
        assert len(list(tmp_path.glob("deform_conv_cpu-*.so"))) == 2
    finally:
        cpu_backend.load_kernels.cache_clear()


@pytest.mark.skipif(not cpu_backend.kernels_available(), reason="no C++ compiler here")
def test_kernels_built_for_avx2_use_no_avx512_and_compute_the_same(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """What an AVX2-only host builds (-march=haswell), built and run here: not one AVX-512 instruction in the
    library, and every dtype's result as with the host's build."""
    import shutil
    import subprocess

    x, offset, weight, bias, mask = _inputs(5)
    expected = {
        dtype: deform_conv2d(
            *(t.to(dtype) for t in (x, offset, weight, bias)), padding=1, mask=mask.to(dtype), backend="cpu"
        )
        for dtype in (torch.float32, torch.float64, torch.bfloat16)
    }
    monkeypatch.setenv("FAPN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(cpu_backend.MARCH_ENV_VAR, "haswell")
    cpu_backend.load_kernels.cache_clear()
    try:
        assert cpu_backend.load_kernels() is not None
        (library,) = tmp_path.glob("deform_conv_cpu-*.so")
        if shutil.which("objdump"):
            listing = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True).stdout
            assert "ymm" in listing and "zmm" not in listing  # AVX2 vectors, no AVX-512 register anywhere
        for dtype, reference in expected.items():
            out = deform_conv2d(*(t.to(dtype) for t in (x, offset, weight, bias)), padding=1, mask=mask.to(dtype),
                                backend="cpu")  # fmt: skip
            tolerance = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 1e-2}[dtype]
            torch.testing.assert_close(out, reference, rtol=tolerance, atol=tolerance)
    finally:
        cpu_backend.load_kernels.cache_clear()


@pytest.mark.skipif(not cpu_backend.kernels_available(), reason="no C++ compiler here")
def test_kernels_cache_falls_back_to_a_temporary_folder(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A cache directory that cannot be created (read-only home): the library goes to a per-user temp folder."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("FAPN_CACHE_DIR", str(blocker / "fapn"))
    monkeypatch.setattr(cpu_backend.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    cpu_backend.load_kernels.cache_clear()
    try:
        assert cpu_backend.load_kernels() is not None
        assert list((tmp_path / "tmp").glob("fapn-cache-*/deform_conv_cpu-*.so"))
    finally:
        cpu_backend.load_kernels.cache_clear()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision(backend: str, dtype: torch.dtype) -> None:
    """Every backend takes float16 and bfloat16 and returns that dtype, close to the float32 result."""
    inputs32 = _inputs(1)
    inputs = [t.to(dtype).requires_grad_() for t in inputs32]
    x, offset, weight, bias, mask = inputs
    out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend=backend)
    assert out.dtype == dtype
    expected = deform_conv2d(*[t.to(dtype).float() for t in inputs32[:4]], padding=1, mask=mask.detach().float(),
                             backend="torchvision")  # fmt: skip
    tolerance = 2e-2 if dtype == torch.bfloat16 else 3e-3
    assert _relative_error(out.detach(), expected) < tolerance
    out.float().square().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == dtype and torch.isfinite(t.grad).all() for t in inputs)


def test_cpu_backend_channels_last_and_strided_views() -> None:
    """FaPN passes offset and mask as channel slices of one tensor; channels-last input gives channels-last output."""
    x, offset, weight, bias, mask = _inputs(2)
    offset_mask = torch.cat([offset, mask], 1)
    offset_view, mask_view = offset_mask[:, : offset.shape[1]], offset_mask[:, offset.shape[1] :]
    expected = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend="torchvision")
    out = deform_conv2d(x.contiguous(memory_format=torch.channels_last), offset_view, weight, bias, padding=1,
                        mask=mask_view, backend="cpu")  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    if cpu_backend.kernels_available():
        assert out.is_contiguous(memory_format=torch.channels_last)
    out_nchw = deform_conv2d(x, offset_view, weight, bias, padding=1, mask=mask_view, backend="cpu")
    assert out_nchw.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_backend_reads_channels_last_offset_slices_in_place(dtype: torch.dtype) -> None:
    """A channels-last model's offset-and-mask conv gives NHWC slices: the kernels read them with their strides
    (no copy), with the values of torchvision on contiguous copies, forward and backward."""
    x, offset, weight, bias, mask = _inputs(4)
    # quarter-pixel offsets (exact in bfloat16) never put a sample on a pixel boundary, where the offset
    # gradient has two one-sided values (torchvision's CPU op takes the right-hand one at x = -1, fapn's zero)
    offset = (offset * 2).round() + 0.25
    offset_mask = torch.cat([offset, mask], 1).contiguous(memory_format=torch.channels_last).to(dtype)
    x16, weight16, bias16 = x.to(dtype), weight.to(dtype), bias.to(dtype)
    split = offset.shape[1]
    views = [offset_mask[:, :split], offset_mask[:, split:]]
    assert not views[0].is_contiguous() and views[0].stride(1) == 1
    expected = deform_conv2d(*(t.float() for t in (x16, views[0], weight16, bias16)), padding=1,
                             mask=views[1].float(), backend="torchvision")  # fmt: skip
    leaf = offset_mask.detach().requires_grad_()
    out = deform_conv2d(x16.contiguous(memory_format=torch.channels_last), leaf[:, :split], weight16, bias16,
                        padding=1, mask=leaf[:, split:], backend="cpu")  # fmt: skip
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), expected, rtol=tolerance, atol=tolerance)
    out.float().sum().backward()
    reference = offset_mask.detach().float().requires_grad_()
    deform_conv2d(x16.float(), reference[:, :split], weight16.float(), bias16.float(), padding=1,
                  mask=reference[:, split:], backend="torchvision").sum().backward()  # fmt: skip
    assert leaf.grad is not None and reference.grad is not None
    # norm-wise; bfloat16 bound: three roundings (3 * 2^-8)
    error = ((leaf.grad.float() - reference.grad).norm() / reference.grad.norm()).item()
    assert error <= (1e-5 if dtype == torch.float32 else 3 * 2.0**-8), error


def test_cpu_backend_partial_gradients() -> None:
    """Only some inputs requiring grad (frozen weight, fixed offsets) gives the same gradients as torchvision."""
    x, offset, weight, bias, mask = _inputs(3)
    results = {}
    for backend in ("torchvision", "cpu"):
        xx, mm = x.clone().requires_grad_(), mask.clone().requires_grad_()
        out = deform_conv2d(xx, offset, weight, bias, padding=1, mask=mm, backend=backend)
        results[backend] = torch.autograd.grad(out.square().sum(), [xx, mm])
    for a, b in zip(results["cpu"], results["torchvision"]):
        assert _relative_error(a, b) < 1e-5


class _Deform(nn.Module):
    def __init__(self, backend: str | None) -> None:
        super().__init__()
        self.backend = backend
        self.weight = nn.Parameter(torch.randn(8, 16, 3, 3) / 12)
        self.bias = nn.Parameter(torch.randn(8))

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, padding=1, mask=mask, backend=self.backend)


def test_pytorch_backend_exports() -> None:
    """torch.export captures the pure-PyTorch backend in core ATen ops (grid_sampler, matmul), no custom op."""
    x, offset, _, _, mask = _inputs(4, N=1)
    module = _Deform("pytorch").eval()
    program = torch.export.export(module, (x, offset, mask))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("grid_sampler" in t for t in targets), targets
    assert not any("torchvision" in t for t in targets)
    torch.testing.assert_close(program.module()(x, offset, mask), module(x, offset, mask))


def test_default_backend_exports_torchvision_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no backend named, export keeps torchvision's single op (it maps to ONNX DeformConv)."""
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    x, offset, _, _, mask = _inputs(5, N=1)
    module = _Deform(None).eval()
    program = torch.export.export(module, (x, offset, mask))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("torchvision.deform_conv2d" in t for t in targets), targets
    torch.testing.assert_close(program.module()(x, offset, mask), module(x, offset, mask), rtol=1e-4, atol=1e-4)


def test_cpu_backend_same_result_on_one_and_several_threads() -> None:
    """The kernels split pixels between threads (private input-gradient buffers): the split changes nothing."""
    x, offset, weight, bias, mask = _inputs(6, dtype=torch.float64, N=1, H=24, W=30)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            tensors = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
            out = deform_conv2d(*tensors[:4], padding=1, mask=tensors[4], backend="cpu")
            results.append([out, *torch.autograd.grad(out.square().sum(), tensors)])
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    expected = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, backend="torchvision")
    torch.testing.assert_close(results[0][0], expected, rtol=1e-12, atol=1e-12)


ROW_BYTES = 3 * 12 * 3 * 16 * 8  # kh * W_out * kw * C * sizeof(float64) of _inputs' default shape


@pytest.mark.parametrize("tile_bytes", [1, 4 * ROW_BYTES, 2 * 10 * ROW_BYTES], ids=["row", "band", "images"])
def test_cpu_backend_tiling(monkeypatch: pytest.MonkeyPatch, tile_bytes: int) -> None:
    """One output row per tile, bands of 4 rows (the last one short), two whole images per tile: same result."""
    monkeypatch.setattr(cpu_backend, "SAMPLE_TILE_BYTES", tile_bytes)
    expected_tiles = {1: 30, 4 * ROW_BYTES: 9, 2 * 10 * ROW_BYTES: 2}[tile_bytes]
    assert len(cpu_backend._tiles(3, 10, ROW_BYTES)) == expected_tiles
    x, offset, weight, bias, mask = _inputs(7, dtype=torch.float64, N=3)
    results = {}
    for backend in ("torchvision", "cpu"):
        tensors = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
        out = deform_conv2d(*tensors[:4], padding=1, mask=tensors[4], backend=backend)
        results[backend] = [out, *torch.autograd.grad((out * out.detach().cos()).sum(), tensors)]
    for a, b in zip(results["cpu"], results["torchvision"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
