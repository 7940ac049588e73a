"""What operators watch: queue and send status, and Prometheus metrics."""
