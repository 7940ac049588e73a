"""Celery on Redis: an app factory, thin tasks, and a build pool that uses them."""
