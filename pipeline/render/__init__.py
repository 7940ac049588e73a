"""Rendering: Markdown and sanitising, affiliate rules, templates, emails, hot articles."""
