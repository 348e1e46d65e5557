"""API tests against a deployed covidct service (see conftest.py)."""
