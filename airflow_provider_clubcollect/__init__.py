"""Apache Airflow provider for the ClubCollect Tickets API."""

from __future__ import annotations

from airflow_provider_clubcollect.get_provider_info import get_provider_info

__all__ = ["__version__", "get_provider_info"]

__version__ = "1.0.0"
