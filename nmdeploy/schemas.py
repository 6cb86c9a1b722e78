"""The names and versions of the files nmdeploy writes, each a ``"schema"`` field inside the file.

One place, standard library only: the target bundle reads ``verify.json`` and writes
``engine_report.json`` with nothing of nmdeploy but its engine code and this module.
"""

MANIFEST = "nmdeploy.manifest/1"  # manifest.json of a build
TRAIN = "nmdeploy.train/1"  # resumable training checkpoints
CALIBRATION = "nmdeploy.calibration/1"  # the .json beside a calibration set
VERIFY = "nmdeploy.verify/1"  # verify.json, nmdeploy verify --json
LINT = "nmdeploy.lint/1"  # the Q/DQ lint (verify --trt-rules --json)
EVAL = "nmdeploy.eval/1"  # nmdeploy eval --json
QUANTIZE = "nmdeploy.quantize/1"  # nmdeploy quantize --json
ENGINE = "nmdeploy.engine/1"  # engine_report.json
