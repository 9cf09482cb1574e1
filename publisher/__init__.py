"""Publish a run's final model as a new numbered version for the web demo."""
