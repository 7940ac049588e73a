"""The web variant: the static site build and the units of work it fans out."""
