"""finetuning: config-driven LLM fine-tuning (SFT and DPO)."""

__version__ = "0.1.0"
