"""Sensors of the ClubCollect provider."""
