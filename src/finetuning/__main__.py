"""Allows `python -m finetuning ...` (and `torchrun -m finetuning ...`)."""

from finetuning.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
