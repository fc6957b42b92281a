"""brokerstack lab: broker nodes, failure injection, benchmarks and the generated ops report."""
