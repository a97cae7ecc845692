"""Datasets and transforms for semantic segmentation."""
