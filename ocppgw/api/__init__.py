"""The management API (EMQX-compatible, under ``/api/v5``), its metrics endpoint and the dashboard."""
