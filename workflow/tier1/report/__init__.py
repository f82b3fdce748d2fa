"""Stage 8, report: the measured performance table, verdicts and plots."""
