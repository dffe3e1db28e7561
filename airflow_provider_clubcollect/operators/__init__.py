"""Operators of the ClubCollect provider."""
