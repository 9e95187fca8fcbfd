"""Config models (pure data), loading, and the generated schema and reference."""
