"""Video data: decoding, sources, sampling, transforms, datasets."""
