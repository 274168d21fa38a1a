"""Grad-CAM and its localization against the NIH radiologist boxes."""
