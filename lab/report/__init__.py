"""``brokerstack report``: docs/ops-comparison.md and its charts from the records in results/."""

from lab.report.render import Report, write_report
from lab.report.sources import Sources, load_sources

__all__ = ["Report", "Sources", "load_sources", "write_report"]
