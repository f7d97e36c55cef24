"""`make local`: the pipeline running on this machine (see __main__.py)."""
