"""The ``caducee`` command line."""
