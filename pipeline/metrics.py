"""`pipeline.metrics.retrieval_metrics`, the library API DESIGN.md names; defined in `pipeline.evaluation.metrics`."""

from pipeline.evaluation.metrics import retrieval_metrics

__all__ = ["retrieval_metrics"]
