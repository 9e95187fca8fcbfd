"""finetuning: config-driven LLM fine-tuning (SFT and DPO)."""

import sys

__version__ = "0.1.0"


class _NoSpeculativeBitsandbytes:
    """Answers peft's speculative ``import bitsandbytes`` with "not installed", only that one.

    ``peft.helpers`` (imported by every ``import peft``, which transformers' Trainer does
    whenever peft is installed) runs ``try: import bitsandbytes except ImportError: bnb = None``
    at import time, for one helper we never call (``find_kappa_target_modules``). Importing
    bitsandbytes also imports ``torch._inductor``: about a sixth of the Trainer's import time, on
    every run and ``--help``. This finder refuses exactly that import, while ``peft.helpers`` is
    being initialised; every other import of bitsandbytes (quantized loading, peft's LoRA
    layers for quantized models, ``is_bitsandbytes_available``) is untouched, so QLoRA works
    as before and imports bitsandbytes when it needs it.
    """

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "bitsandbytes":
            helpers = sys.modules.get("peft.helpers")
            if helpers is not None and getattr(helpers.__spec__, "_initializing", False):
                raise ModuleNotFoundError("skipped for peft.helpers", name=name)
        return None


sys.meta_path.insert(0, _NoSpeculativeBitsandbytes)
