"""The content store: articles as Markdown with front matter, and their checks."""
