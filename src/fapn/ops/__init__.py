"""Low-level ops: the deformable convolution and its backends."""

from fapn.ops.deform_conv import (
    BACKEND_ENV_VAR,
    BACKENDS,
    check_backend,
    default_backend,
    deform_backend,
    deform_conv2d,
    environment_backend,
    resolve_backend,
)

__all__ = [
    "deform_conv2d",
    "deform_backend",
    "resolve_backend",
    "default_backend",
    "environment_backend",
    "check_backend",
    "BACKENDS",
    "BACKEND_ENV_VAR",
]
