"""Tests of the covidct_monitor package (run: .venv/bin/python -m pytest monitoring/tests)."""
