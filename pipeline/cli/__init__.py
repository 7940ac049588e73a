"""The ``letterpress`` command: thin click commands over the domain functions."""
