"""Metrics, probes and the collectors that read Redis at scrape time."""
