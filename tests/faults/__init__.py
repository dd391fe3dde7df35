"""Fault-injection tests: outages, stalls, killed processes and lost responses."""
