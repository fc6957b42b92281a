"""Building blocks for chain / group / chord."""

from __future__ import annotations

from celery import shared_task


@shared_task
def step1(data: str) -> str:
    return f"[step1:{data}]"


@shared_task
def step2(data: str) -> str:
    return f"[step2:{data}]"


@shared_task
def step3(data: str) -> str:
    return f"[step3:{data}]"


@shared_task
def sum_results(results: list[int]) -> int:
    return sum(results)
