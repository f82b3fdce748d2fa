"""Stage 5, report: the measured performance table, verdicts and plots."""
