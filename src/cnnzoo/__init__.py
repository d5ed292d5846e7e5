"""cnnzoo: the classic convolutional neural networks, built, explained, trained and compared."""

from cnnzoo.analysis import summarize
from cnnzoo.embeddings import features
from cnnzoo.errors import CnnzooError
from cnnzoo.registry import ModelSpec, create_model, get_spec, list_models

__all__ = [
    "CnnzooError",
    "ModelSpec",
    "create_model",
    "features",
    "get_spec",
    "list_models",
    "summarize",
]
__version__ = "0.1.0"
