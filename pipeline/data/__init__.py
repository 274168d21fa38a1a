"""Label files, image decoding, dataset statistics, leakage, boxes, the prepared format and the input pipeline."""
