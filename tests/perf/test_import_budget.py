"""What `finetuning validate` and the SFT / pretrain recipes import: only what the run uses.

Startup time is mostly other packages' imports, so these tests guard the import graph itself
(``sys.modules`` in a fresh process, never a clock): planning a run imports no Trainer, no peft
and no bitsandbytes; the SFT and pretraining recipes import no TRL, no MLflow without tracking,
no DeepSpeed without a DeepSpeed config, no `datasets` and no bitsandbytes without quantization
(peft's speculative import of it is refused, see ``finetuning/__init__.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import minimal_sft, write_config

#: Run in a fresh interpreter: `finetuning validate CONFIG`, then import the two recipes.
_PROBE = """
import json, sys
from finetuning.cli import main
code = main(["validate", sys.argv[1]])
after_validate = sorted(sys.modules)
import finetuning.train.methods.pretrain, finetuning.train.methods.sft
print(json.dumps({"code": code, "validate": after_validate, "recipes": sorted(sys.modules)}))
"""

NEVER = {"trl", "mlflow", "deepspeed", "datasets", "matplotlib"}
#: Pulled in by transformers' Trainer machinery (trainer_utils imports peft, whose helpers import
#: bitsandbytes): a run needs them, planning it does not.
NOT_FOR_VALIDATE = {"peft", "bitsandbytes", "transformers.trainer", "transformers.trainer_utils"}


def test_validate_and_the_sft_recipe_import_only_what_the_run_uses(
    tiny_llama, chat_data_small, tmp_path
):
    config = write_config(
        tmp_path / "sft.yaml",
        minimal_sft(
            tiny_llama,
            chat_data_small,
            training_args={"learning_rate": 1e-3, "output_dir": str(tmp_path / "o")},
        ),
    )
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["code"] == 0
    validate, recipes = set(found["validate"]), set(found["recipes"])
    assert "finetuning.train.plan" in validate and "finetuning.data.prepare" in validate
    assert not (NEVER | NOT_FOR_VALIDATE) & validate
    assert "transformers.trainer_utils" in recipes  # the probe did import the recipes
    assert not (NEVER | {"bitsandbytes"}) & recipes, sorted((NEVER | {"bitsandbytes"}) & recipes)
    assert "peft.helpers" in recipes  # imported, without its optional bitsandbytes
