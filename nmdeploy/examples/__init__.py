"""The built-in example, shipped inside the package so that ``nmdeploy build`` runs wherever
nmdeploy is installed: Fashion-MNIST (the Debian package ``dataset-fashion-mnist``) and a small
ResNet, with its recipe and its committed calibration set."""
