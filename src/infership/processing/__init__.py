"""Pre- and post-processing declared in model.yaml: image decoding and classification."""
