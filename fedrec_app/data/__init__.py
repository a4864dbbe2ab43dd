"""MovieLens data: download, readers, catalogue, partitions. Knows nothing of Flower or Keras."""
