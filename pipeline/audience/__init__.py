"""Subscribers and what they do: sign-up and consent, lists, tokens, clicks, feedback."""
