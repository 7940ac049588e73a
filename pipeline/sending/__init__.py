"""Sending: issues, preparing batches, the batch sender, rate limits and providers."""
