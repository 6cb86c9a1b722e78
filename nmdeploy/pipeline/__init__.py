"""Recipes, the build's stages, the manifest and the report: ``nmdeploy build`` as a library (``build()``)."""
