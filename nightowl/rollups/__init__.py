"""Minute/hour/day rollups with mergeable quantile sketches (issue 11)."""
