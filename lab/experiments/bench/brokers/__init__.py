"""One module per broker with its bench hooks (``BENCH_VENDOR``, a
:class:`~lab.experiments.bench.vendors.BenchVendor`), named as the broker is in
``lab.harness.vendors.VENDORS``: ``lab.experiments.bench.vendors.BENCH_VENDORS`` finds them by
that name, so a new broker adds a module here and no registry line."""
