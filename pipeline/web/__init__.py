"""The subscriber service (``letterpress serve``): an ASGI application on uvicorn."""
