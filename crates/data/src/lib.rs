//! scalarize-data: Dataset readers, transforms, batching and domain sampling, usable on their own.
