"""The training methods: one recipe per method, each method's own plan checks beside it."""
