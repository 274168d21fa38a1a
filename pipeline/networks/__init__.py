"""DenseNet121 with its preprocessing, BatchNormalization on the fused kernel, the class-weighted loss."""
