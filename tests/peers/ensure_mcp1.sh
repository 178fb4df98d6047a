#!/usr/bin/env bash
# Create (idempotently) the separate virtualenv holding the older MCP SDK, mcp 1.30.0, used by the
# proxy tests as a 2025-11-25-era peer (FastMCP server, ClientSession over Streamable HTTP and SSE).
# It cannot live in .venv: mcp 2.x and 1.x share the `mcp` import name.
#
# Usage: tests/peers/ensure_mcp1.sh [VENV_DIR]   (default: <repo>/.venv-mcp1)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.venv-mcp1}"
want="1.30.0"
# Default to the interpreter behind the project's .venv (the Python the suite runs on).
default_python="python3"
if [ -x "$repo/.venv/bin/python" ]; then
    default_python="$("$repo/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
fi
python="${PYTHON:-$default_python}"

if [ -x "$venv/bin/python" ] \
   && [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null)" = "$want" ]; then
    exit 0
fi

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "mcp 1.x needs Python >= 3.10")'
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "mcp==$want"
"$venv/bin/python" -c 'import mcp, mcp.client.sse, mcp.client.streamable_http, mcp.server.fastmcp'
echo "ensure_mcp1: $venv ready (mcp $want)"
