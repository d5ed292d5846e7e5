"""cnnzoo: the classic convolutional neural networks, built, explained, trained and compared."""

# isort: skip_file
# The families first: importing them fills the registry, which never imports them itself.
import cnnzoo.models  # noqa: F401
from cnnzoo.analysis import summarize
from cnnzoo.embeddings import features
from cnnzoo.errors import CnnzooError
from cnnzoo.factory import create_model
from cnnzoo.registry import ModelSpec, get_spec, list_models

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
