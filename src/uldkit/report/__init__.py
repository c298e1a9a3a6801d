"""Results to tables, plots and an HTML/Markdown report."""
