"""Letterpress: articles and newsletters from Markdown, rendered for the web and for email."""

__version__ = "0.1.0"
