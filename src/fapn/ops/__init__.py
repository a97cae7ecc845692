"""Low-level ops: the deformable convolution and its backends."""

from fapn.ops.deform_conv import BACKEND_ENV_VAR, BACKENDS, default_backend, deform_conv2d

__all__ = ["deform_conv2d", "BACKENDS", "BACKEND_ENV_VAR", "default_backend"]
