"""``python -m nmdeploy`` (and ``torchrun -m nmdeploy finetune ...``) runs the command line."""

from nmdeploy.cli import main

if __name__ == "__main__":
    main()
