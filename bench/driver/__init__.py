"""The workload driver behind ``actorkv bench`` / ``python -m bench``.

Each workload module exposes functions ``run_<name>(ctx) -> list[Row]``, registered in
:mod:`bench.driver.registry`; :mod:`bench.driver.cli` runs the selected ones and writes the
table, ``results.json``, ``report.md`` and charts.
"""
