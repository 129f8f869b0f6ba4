"""Reports read a run directory (never the trainer's memory) and write numbers and plots."""

from imgclf.reports.build import write_reports

__all__ = ["write_reports"]
