"""driftloop tasks: pure modules per concern, each with a thin Prefect-task layer (``steps.py``)."""

__version__ = "0.1.0"
