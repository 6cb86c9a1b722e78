"""Recipes, stages and artifacts (for now: the synthetic sparsify demo)."""
