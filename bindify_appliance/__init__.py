"""Bindify Appliance: a self-hosted MCP authentication proxy.

Only the version lives here, so importing the package stays cheap for `bindify --version`.
"""

__version__ = "0.1.0"
