"""Run and sweep comparison: collect runs, rank them in a table, draw their curves, write report.html."""
