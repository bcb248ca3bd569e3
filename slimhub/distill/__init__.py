"""Knowledge distillation: feature taps by layer name, losses, and their weighted combination."""
from slimhub.distill.distiller import Adapter, Distiller
from slimhub.distill.losses import LOSSES, fsp, fsp_matrix, get_loss, l2, soft_label
from slimhub.distill.taps import FeatureTap, UnknownLayerError, find_layer

__all__ = ["Adapter", "Distiller", "FeatureTap", "LOSSES", "UnknownLayerError", "find_layer",
           "fsp", "fsp_matrix", "get_loss", "l2", "soft_label"]
