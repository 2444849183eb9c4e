"""What report.py writes, in parts: `runs` finds and reads the runs under results folders, `pooling` pools their
seeds into table cells, `tables` writes report.md and the CSV files, `figures` draws the PNGs.

Named `reporting`, not `report`: a package `report/` would shadow the entry point `report.py` on import."""
