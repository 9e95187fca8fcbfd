"""Tokenizer setup, model loading, quantization and adapters."""
