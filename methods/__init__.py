"""One file per method; importing this package registers them all."""
from methods.base import BASELINES, METHODS, AUGMENTED, CLEAN, DataInfo, Method, OptimConfig, get, register
from methods import vae, aasae, aae, simclr, byol, vicreg, mae  # noqa: F401  (registration order = listing order)
from methods import baselines  # noqa: F401

__all__ = ["BASELINES", "METHODS", "AUGMENTED", "CLEAN", "DataInfo", "Method", "OptimConfig", "get", "register"]
