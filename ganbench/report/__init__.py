"""Comparison reports built from a suite's run folders alone (`ganbench report DIR`).

load.py reads the folders into pandas, ranking.py and stats.py rank the configurations over
seeds, verdict.py says it in one line each, figures.py draws the plots, view.py and render.py
fill the HTML and Markdown templates, and build.py writes everything.
"""
from ganbench.report.build import Report, build_report

__all__ = ["Report", "build_report"]
