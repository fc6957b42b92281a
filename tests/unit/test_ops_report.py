"""docs/ops-comparison.md is exactly what `brokerstack report` renders from the committed records,
so no number in it was typed or edited by hand, and every chart it links to is committed."""

from __future__ import annotations

import re
from pathlib import Path

from lab.report import Report, load_sources
from lab.report.render import PUBLISHED_MIN_CHAOS_TASKS

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ops-comparison.md"


def test_committed_ops_comparison_is_rendered_from_the_committed_results():
    sources = load_sources(REPO / "results", min_chaos_tasks=PUBLISHED_MIN_CHAOS_TASKS)
    assert sources.chaos and sources.bench and sources.priority
    rendered = Report(sources, DOC, DOC.parent / "img", draw_charts=False).render()
    assert DOC.read_text() == rendered, "docs/ops-comparison.md differs from its records: run `brokerstack report`"


def test_every_chart_the_doc_links_to_is_committed():
    charts = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", DOC.read_text())
    assert charts
    for chart in charts:
        assert (DOC.parent / chart).is_file(), chart
