"""Production monitoring: the task-events exporter (``python -m services.monitoring.exporter``) and
the checks the compose profiles ``monitoring`` and ``dashboards`` run. Metric names and alert rules:
docs/monitoring.md."""
