"""Helpers shared by the tests: training runs, state comparisons, command-line runs, the kill harness."""
