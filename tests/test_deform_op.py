"""fapn.ops.deform_conv2d, every backend, against a float64 reference written here from the definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from fapn.ops import BACKENDS, deform_conv2d

ALL_BACKENDS = sorted(BACKENDS)


def bilinear_sample(image: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """``image[N, C, H, W]`` at real positions ``y, x [N, P]`` -> ``[N, C, P]``, by hand.

    DCN's rule (torchvision, the authors' CUDA code): a position with ``y <= -1``, ``y >= H``, ``x <= -1`` or
    ``x >= W`` samples zero; otherwise the four neighbours are weighted bilinearly, a neighbour outside the
    image counting as zero.
    """
    N, C, H, W = image.shape
    inside = (y > -1) & (y < H) & (x > -1) & (x < W)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    flat = image.reshape(N, C, H * W)
    value = torch.zeros(N, C, y.shape[1], dtype=image.dtype)
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yy, xx = (y0 + dy).long(), (x0 + dx).long()
            valid = inside & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            index = (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)).unsqueeze(1).expand(N, C, -1)
            value = value + torch.gather(flat, 2, index) * (wy * wx * valid).unsqueeze(1)
    return value


def reference_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
) -> Tensor:
    """The deformable conv from its definition, a loop over offset groups and kernel taps (float64)."""
    N, C, _H, _W = input.shape
    C_out, C_per_group, kh, kw = weight.shape
    K = kh * kw
    H_out, W_out = offset.shape[-2:]
    G = offset.shape[1] // (2 * K)
    Cg = C // G
    base_y = (torch.arange(H_out, dtype=input.dtype) * stride[0] - padding[0]).view(H_out, 1).expand(H_out, W_out)
    base_x = (torch.arange(W_out, dtype=input.dtype) * stride[1] - padding[1]).view(1, W_out).expand(H_out, W_out)
    columns = torch.zeros(N, C, K, H_out * W_out, dtype=input.dtype)  # columns[n, c, k, p]
    for g in range(G):
        for k in range(K):
            i, j = divmod(k, kw)
            dy = offset[:, g * 2 * K + 2 * k].reshape(N, -1)
            dx = offset[:, g * 2 * K + 2 * k + 1].reshape(N, -1)
            y = base_y.reshape(1, -1) + i * dilation[0] + dy
            x = base_x.reshape(1, -1) + j * dilation[1] + dx
            sample = bilinear_sample(input[:, g * Cg : (g + 1) * Cg], y, x)
            if mask is not None:
                sample = sample * mask[:, g * K + k].reshape(N, 1, -1)
            columns[:, g * Cg : (g + 1) * Cg, k] = sample
    conv_groups = C // C_per_group
    out_per_group = C_out // conv_groups
    outs = []
    for cg in range(conv_groups):
        cols = columns[:, cg * C_per_group : (cg + 1) * C_per_group].reshape(N, C_per_group * K, -1)
        w = weight[cg * out_per_group : (cg + 1) * out_per_group].reshape(out_per_group, -1)
        outs.append(torch.einsum("ok,nkp->nop", w, cols))
    out = torch.cat(outs, 1).reshape(N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def make_case(
    seed: int,
    *,
    N: int = 2,
    C: int = 8,
    C_out: int = 6,
    H: int = 9,
    W: int = 11,
    kernel: tuple[int, int] = (3, 3),
    offset_groups: int = 2,
    conv_groups: int = 1,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    offset_scale: float = 3.0,
    with_mask: bool = True,
    with_bias: bool = True,
    dtype: torch.dtype = torch.float64,
) -> dict:
    """Random inputs; offsets of ``offset_scale`` pixels (std) send many samples far and out of the image."""
    g = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    H_out = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    W_out = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    K = kh * kw
    case = {
        "input": torch.randn(N, C, H, W, generator=g, dtype=dtype),
        "offset": torch.randn(N, 2 * offset_groups * K, H_out, W_out, generator=g, dtype=dtype) * offset_scale,
        "weight": torch.randn(C_out, C // conv_groups, kh, kw, generator=g, dtype=dtype) / (C * K) ** 0.5,
        "bias": torch.randn(C_out, generator=g, dtype=dtype) if with_bias else None,
        "mask": torch.rand(N, offset_groups * K, H_out, W_out, generator=g, dtype=dtype) if with_mask else None,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
    }
    return case


CASES = {
    "dcnv2": {},
    "dcnv1-no-mask": {"with_mask": False},
    "no-bias": {"with_bias": False},
    "stride2-pad0-dil2": {"stride": (2, 2), "padding": (0, 0), "dilation": (2, 2), "H": 12, "W": 13},
    "anisotropic": {"stride": (2, 1), "padding": (2, 1), "dilation": (1, 2), "kernel": (3, 2)},
    "one-group": {"offset_groups": 1},
    "four-groups": {"offset_groups": 4},
    "many-pixel-offsets": {"offset_scale": 12.0},
    "batch1-1x1": {"N": 1, "kernel": (1, 1), "padding": (0, 0)},
    "conv-groups": {"conv_groups": 2, "offset_groups": 4, "C_out": 4},
}


def _inputs(case: dict) -> list[Tensor]:
    return [t for t in (case["input"], case["offset"], case["weight"], case["bias"], case["mask"]) if t is not None]


def _call(case: dict, backend: str | None, **tensors: Tensor) -> Tensor:
    args = {**case, **tensors}
    return deform_conv2d(
        args["input"],
        args["offset"],
        args["weight"],
        args["bias"],
        stride=args["stride"],
        padding=args["padding"],
        dilation=args["dilation"],
        mask=args["mask"],
        backend=backend,
    )


def _forward_and_grads(case: dict, backend: str | None) -> list[Tensor]:
    """The output and the gradients of a fixed nonlinear loss with respect to every tensor input."""
    tensors = {k: v.detach().clone().requires_grad_() for k, v in case.items() if isinstance(v, Tensor)}
    fn = reference_deform_conv2d if backend is None else None
    if fn is None:
        out = _call(case, backend, **tensors)
    else:
        out = fn(
            tensors["input"], tensors["offset"], tensors["weight"], tensors.get("bias"),
            case["stride"], case["padding"], case["dilation"], tensors.get("mask"),
        )  # fmt: skip
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weights).sum() + (out**2).sum() / 2
    grads = torch.autograd.grad(
        loss, [tensors[k] for k in ("input", "offset", "weight", "bias", "mask") if k in tensors]
    )
    return [out.detach(), *grads]


def _relative_errors(values: list[Tensor], references: list[Tensor]) -> list[float]:
    return [((v.double() - r).norm() / r.norm()).item() for v, r in zip(values, references)]


def test_reference_matches_dense_conv_at_zero_offset() -> None:
    """The reference itself: zero offsets and unit mask make it a plain convolution."""
    case = make_case(0, offset_scale=0.0, stride=(2, 1), dilation=(1, 2), padding=(1, 2))
    case["mask"] = torch.ones_like(case["mask"])
    expected = F.conv2d(case["input"], case["weight"], case["bias"], case["stride"], case["padding"], case["dilation"])
    out = reference_deform_conv2d(**{k: case[k] for k in ("input", "offset", "weight", "bias", "mask")},
                                  stride=case["stride"], padding=case["padding"], dilation=case["dilation"])  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_reference_bilinear_sample_by_hand() -> None:
    """One sample worked out on paper, including a corner outside the image and a sample outside altogether."""
    image = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)  # value = 4 * row + col
    y = torch.tensor([[0.5, -0.5, 2.25, -1.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[1.25, 0.0, 3.5, 0.0, 4.0]], dtype=torch.float64)
    out = bilinear_sample(image, y, x)[0, 0]
    # inside: bilinear of a linear function is exact; -0.5 row: half of row 0; (2.25, 3.5): only (2, 3) is inside
    expected = torch.tensor([4 * 0.5 + 1.25, 0.5 * 0.0, 0.75 * 0.5 * 11, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_float64_matches_reference(backend: str, case_name: str) -> None:
    case = make_case(1, **CASES[case_name])
    values = _forward_and_grads(case, backend)
    references = _forward_and_grads(case, None)
    assert len(values) == len(references)
    for name, error in zip(
        ["out", *("d_" + str(i) for i in range(len(values) - 1))], _relative_errors(values, references)
    ):
        assert error < 1e-12, f"{backend} {case_name}: {name} relative error {error:.2e}"


@pytest.mark.parametrize(
    "case_name", ["dcnv2", "dcnv1-no-mask", "many-pixel-offsets", "four-groups", "stride2-pad0-dil2"]
)
def test_float32_as_close_to_reference_as_torchvision(case_name: str) -> None:
    """Norm-wise ||a - ref|| / ||ref|| of output and every gradient, in float32, against float64.

    The offset gradient jumps where a sample crosses a pixel boundary, so an element-wise maximum would be
    ill-posed: a float32 rounding can put a sample on the other side. The bound is torchvision's own float32
    error (times 4, floored at 1e-6).
    """
    case = make_case(2, **{"N": 2, "C": 32, "C_out": 16, "H": 24, "W": 20, **CASES[case_name]})
    references = _forward_and_grads(case, None)
    case32 = {k: v.float() if isinstance(v, Tensor) else v for k, v in case.items()}
    errors = {backend: _relative_errors(_forward_and_grads(case32, backend), references) for backend in ALL_BACKENDS}
    for backend, errs in errors.items():
        for i, (error, tv_error) in enumerate(zip(errs, errors["torchvision"])):
            assert error <= max(4 * tv_error, 1e-6), f"{backend} tensor {i}: {error:.2e} vs torchvision {tv_error:.2e}"


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_gradcheck(backend: str, with_mask: bool) -> None:
    """Analytic against numerical gradients in float64; offsets of several pixels, some samples out of bounds.

    ``fast_mode`` checks random projections of the Jacobian (PyTorch's own choice for costly ops): a few seconds
    instead of a thousand perturbed forwards per backend.
    """
    case = make_case(
        3, N=1, C=4, C_out=3, H=5, W=6, offset_groups=2, stride=(2, 1), dilation=(1, 2), padding=(1, 2),
        offset_scale=2.0, with_mask=with_mask,
    )  # fmt: skip
    tensors = [t.requires_grad_() for t in _inputs(case)]

    def fn(*args: Tensor) -> Tensor:
        names = [k for k in ("input", "offset", "weight", "bias", "mask") if case[k] is not None]
        return _call(case, backend, **dict(zip(names, args)))

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_zero_offset_unit_mask_is_dense_conv(backend: str) -> None:
    case = make_case(4, dtype=torch.float32, offset_scale=0.0, stride=(1, 2), dilation=(2, 1), padding=(2, 1))
    case["mask"] = torch.ones_like(case["mask"])
    expected = F.conv2d(case["input"], case["weight"], case["bias"], case["stride"], case["padding"], case["dilation"])
    torch.testing.assert_close(_call(case, backend), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_samples_far_outside_give_bias_only(backend: str) -> None:
    case = make_case(5, dtype=torch.float32)
    case["offset"] = torch.full_like(case["offset"], 1000.0)
    out = _call(case, backend)
    torch.testing.assert_close(out, case["bias"].view(1, -1, 1, 1).expand_as(out), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradcheck_full_jacobian(backend: str) -> None:
    """The whole Jacobian, element by element, on a case small enough to afford it."""
    case = make_case(6, N=1, C=2, C_out=2, H=4, W=5, kernel=(2, 2), stride=(2, 2), padding=(0, 1), offset_scale=2.0)
    tensors = [t.requires_grad_() for t in _inputs(case)]

    def fn(*args: Tensor) -> Tensor:
        return _call(case, backend, **dict(zip(("input", "offset", "weight", "bias", "mask"), args)))

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6, rtol=1e-4)


BF16_UNIT_ROUNDOFF = 2.0**-8  # bfloat16 keeps 8 significant bits: one rounding moves a value by at most 2^-8


@pytest.mark.parametrize("case_name", sorted(set(CASES) - {"conv-groups"}))
def test_cpu_kernels_bfloat16_against_float64(case_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bfloat16 kernels against the float64 reference on the same (bfloat16-rounded) inputs.

    The kernels sample in float32 and round each sample once, oneDNN accumulates in float32 and rounds the output
    once, so the output is off by at most two roundings: norm-wise error <= 2u (u = 2^-8). The backward runs in
    float32 from the bfloat16 values; the loss's gradient is itself computed in bfloat16 (one rounding) from a
    rounded output (one more), and each gradient is rounded once on the way out: <= 3u. Both bounds are 3x to 4x the
    errors measured (1.7e-3 to 2.3e-3 output, 1.0e-3 to 3.5e-3 gradients).
    """
    from fapn.ops import deform_conv_cpu

    if not deform_conv_cpu.kernels_available():
        pytest.skip("no C++ compiler here")

    def no_fallback(*args: object, **kwargs: object) -> Tensor:
        raise AssertionError("bfloat16 fell back to the pure-PyTorch backend")

    monkeypatch.setattr(deform_conv_cpu, "deform_conv2d_pytorch", no_fallback)
    case = make_case(7, **{"N": 2, "C": 32, "C_out": 16, "H": 14, "W": 12, **CASES[case_name]})
    rounded = {k: v.to(torch.bfloat16).double() if isinstance(v, Tensor) else v for k, v in case.items()}
    references = _forward_and_grads(rounded, None)
    case16 = {k: v.to(torch.bfloat16) if isinstance(v, Tensor) else v for k, v in case.items()}
    values = _forward_and_grads(case16, "cpu")
    assert all(v.dtype == torch.bfloat16 for v in values)
    errors = _relative_errors(values, references)
    assert errors[0] <= 2 * BF16_UNIT_ROUNDOFF, f"output {errors[0]:.2e}"
    for i, error in enumerate(errors[1:]):
        assert error <= 3 * BF16_UNIT_ROUNDOFF, f"gradient {i}: {error:.2e}"


def test_cpu_kernels_bfloat16_under_autocast_and_channels_last() -> None:
    """CPU autocast in bfloat16 runs the bfloat16 kernels: same values as calling them on bfloat16 tensors."""
    case = make_case(8, N=1, C=16, C_out=8, H=10, W=9, dtype=torch.float32)
    x, offset, weight, bias, mask = _inputs(case)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_conv2d(x.contiguous(memory_format=torch.channels_last), offset, weight, bias, padding=1,
                            mask=mask, backend="cpu")  # fmt: skip
    assert out.dtype == torch.bfloat16
    expected = deform_conv2d(*(t.to(torch.bfloat16) for t in (x, offset, weight, bias)), padding=1,
                             mask=mask.to(torch.bfloat16), backend="cpu")  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
