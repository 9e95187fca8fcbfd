"""Companion tools: the example scaffold, adapter merging, vLLM adapters, generation."""
