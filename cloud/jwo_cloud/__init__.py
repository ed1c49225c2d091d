"""jwo cloud side: the ingest (ZeroMQ + CURVE + protobuf), the bucket (S3 or a
directory), the review queue and UI, and the store's uplink client."""
