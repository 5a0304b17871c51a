"""Reading, writing and metadata-stripping of image files, always atomically."""
