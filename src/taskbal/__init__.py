"""taskbal: reproduction pipeline for task balancing in meta-learning and multi-task learning."""
__version__ = "0.1.0"
