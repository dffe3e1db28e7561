"""Hooks of the ClubCollect provider."""
