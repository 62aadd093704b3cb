"""onnxruntime sessions for modules exported in memory (kept in core/ so evaluators can share them)."""

from __future__ import annotations

from compactnas.core.onnx_runtime import onnx_session, onnxruntime_version

__all__ = ["onnx_session", "onnxruntime_version"]
