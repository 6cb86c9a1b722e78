"""Built-in example models and data loaders (plain torch, no torchvision)."""
