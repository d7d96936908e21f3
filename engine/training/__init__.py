"""Training: datasets and augmentation, losses, the loop, and the three methods (supervised, KDA
distillation, MRIFE self-distillation) plus pseudo-label rounds. Imported only where training runs."""
