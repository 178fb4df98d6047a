"""Tests of the service registry and admin-added service storage."""
