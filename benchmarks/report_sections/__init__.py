"""The sections of benchmarks/REPORT.md, one module per section; benchmarks/report.py lists them."""
