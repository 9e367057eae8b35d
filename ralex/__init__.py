"""Ralex: a budget-aware AI coding stack."""

__version__ = "0.1.0"
