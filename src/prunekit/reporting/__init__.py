"""Measured results of a run (``Report``) and their renderings: rich tables and standalone HTML."""

from prunekit.reporting.report import ModelMetrics, QuantizationInfo, RecoveryAccuracy, Report

__all__ = ["ModelMetrics", "QuantizationInfo", "RecoveryAccuracy", "Report"]
