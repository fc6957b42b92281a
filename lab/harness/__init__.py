"""The measuring side's bottom layer: broker nodes (containers or local processes), worker and API
processes, the setups they form, and where results are written. Imports nothing above it
(experiments, report, cli)."""
