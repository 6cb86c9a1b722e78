"""The Fashion-MNIST example: a small ResNet-style CNN, the data reader, the recipe, the calibration set.

``RECIPE`` is the built-in recipe (what ``nmdeploy build`` runs with no ``--recipe``; the
recipe defaults equal it), ``CALIBRATION`` the definition of the committed calibration set
``CALIBRATION_SET`` (512 class-balanced training images).
"""

from pathlib import Path

from nmdeploy.examples.fashion_mnist.model import FashionResNet

__all__ = ["CALIBRATION", "CALIBRATION_SET", "FashionResNet", "RECIPE"]

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe.yaml"
CALIBRATION = HERE / "calibration.yaml"
CALIBRATION_SET = HERE / "fashion-mnist-512.npz"
