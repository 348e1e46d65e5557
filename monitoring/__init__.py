"""The monitoring folder as a package only so that pytest gives its tests unique module names
(monitoring.tests.*) beside the top-level tests/ of the repository."""
