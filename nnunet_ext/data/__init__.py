"""Data: the offline synthetic multi-center cohort, NIfTI helpers and missing-channel input preparation."""
