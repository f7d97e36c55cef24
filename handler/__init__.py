"""The Cloud Run service that Cloud Tasks calls."""
