"""Test helpers shared by several test files (import as ``from support.rtsp import ...``)."""

from .rtsp import RtspServer, gst_rtsp_status, require_gst_rtsp, start_rtsp_server

__all__ = ["RtspServer", "gst_rtsp_status", "require_gst_rtsp", "start_rtsp_server"]
