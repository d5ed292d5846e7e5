"""Datasets for training and evaluation: the built-in digits, MNIST, Fashion-MNIST, CIFAR-10/100
and image folders, with one colour policy, separate train/validation transforms and loaders
whose batches depend only on (seed, epoch). See ``docs/data.md``."""

from cnnzoo.data.datasets import DATASETS, ArrayDataset, DataBundle, load_dataset
from cnnzoo.data.imagefolder import ImageDataset, ImageFolderDataset, ScanReport, scan_imagefolder
from cnnzoo.data.loader import make_loader, seed_worker

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DataBundle",
    "ImageDataset",
    "ImageFolderDataset",
    "ScanReport",
    "load_dataset",
    "make_loader",
    "scan_imagefolder",
    "seed_worker",
]
