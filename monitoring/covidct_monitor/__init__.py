"""covidct_monitor: the Evidently monitoring job of covidct.

Compares the image statistics and predicted probabilities that `covidct serve` logs (its SQLite
prediction log) with a reference set exported by `covidct monitor export-reference`, checks the
classification quality on predictions that received feedback labels and of study verdicts on
studies that received study feedback, writes Evidently HTML/JSON reports plus a `summary.json`,
and optionally logs the run to MLflow.

Run `python -m covidct_monitor --help`. See docs/MONITORING.md.
"""

__version__ = "0.1.0"

# Exit codes of `python -m covidct_monitor report` (and of `watch` at start-up).
EXIT_OK = 0
EXIT_TESTS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
