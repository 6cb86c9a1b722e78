"""all-MiniLM-L6-v2 made 2:4 by distillation from the dense model (``nmdeploy build --recipe examples/minilm/recipe.yaml``)."""
