"""What the edge (jwo_nodes) and the cloud (jwo_cloud) share, so neither imports the
other: plain Python, no rclpy, no third-party packages."""
