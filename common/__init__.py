"""Pieces every component shares: the model, the volume layout, data loading and safe file writes."""
