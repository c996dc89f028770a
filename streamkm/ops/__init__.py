"""What operators see: Prometheus metrics and the HTTP endpoints."""
