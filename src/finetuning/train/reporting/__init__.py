"""What a run reports: the summary, the report, the log lines and the trainer callbacks."""
