"""nsr-env: continual learning with LoRA adapters as memory, as a Gymnasium environment."""

__version__ = "0.1.0"
