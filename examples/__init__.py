"""Worked examples of metabench (see README.md); run them from the repository root: ``python -m examples.NAME``."""
