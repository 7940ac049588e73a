"""Mail providers behind one interface (``base.Provider``)."""
