"""The ``balsam`` command line (Click). One module per noun; main.py assembles them."""
