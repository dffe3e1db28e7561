"""Triggers of the ClubCollect provider."""
