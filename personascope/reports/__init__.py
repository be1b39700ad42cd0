"""HTML risk reports, JSON results and the release gate. Never imports torch."""
