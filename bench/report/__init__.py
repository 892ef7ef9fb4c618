"""Results as paper tables (Markdown, CSV, LaTeX) and plots."""
