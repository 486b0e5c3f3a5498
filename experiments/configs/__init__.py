"""One ml_collections config file per protocol; `base.py` holds the shared defaults."""
