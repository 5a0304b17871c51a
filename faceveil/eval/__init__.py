"""Measuring detection quality and protection against ground truth."""
