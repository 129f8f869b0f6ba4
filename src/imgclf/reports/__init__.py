"""Reports read a run directory (never the trainer's memory) and write numbers and plots."""

from imgclf.reports.build import diagnose_run, write_reports

__all__ = ["diagnose_run", "write_reports"]
