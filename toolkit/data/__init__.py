"""Datasets: the built-in ones and user files, loaded into one validated shape."""

from toolkit.data.datasets import BUILTIN_DATASETS, Dataset, load_dataset

__all__ = ["BUILTIN_DATASETS", "Dataset", "load_dataset"]
