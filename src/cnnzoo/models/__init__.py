"""One file per family; importing this package registers every model, in paper order."""

# isort: skip_file
from cnnzoo.models import (  # noqa: F401
    lenet,
    alexnet,
    vgg,
    googlenet,
    resnet,
    densenet,
    mobilenet,
    efficientnet,
    mlp,
)
