"""wenlan: train, evaluate and use BriVL, the Chinese image-text model of WenLan."""

__version__ = "0.1.0"
