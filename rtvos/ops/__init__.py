"""Custom operators of rtvos; importing this package registers them with torch.library."""

from .correlation import correlation_channels, local_correlation
from .deform_conv import DeformConv2d, deform_conv2d

__all__ = ["DeformConv2d", "deform_conv2d", "local_correlation", "correlation_channels"]
