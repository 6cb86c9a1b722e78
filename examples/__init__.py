"""Examples that run from a source checkout (the built-in one ships in ``nmdeploy.examples``)."""
