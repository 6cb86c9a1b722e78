"""The Fashion-MNIST example: a small ResNet-style CNN."""

from examples.fashion_mnist.model import FashionResNet

__all__ = ["FashionResNet"]
