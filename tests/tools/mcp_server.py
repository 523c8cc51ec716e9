"""A real MCP server for the tests (the ``mcp`` SDK's MCPServer, formerly FastMCP).

``python mcp_server.py`` speaks MCP over stdio; ``python mcp_server.py PORT`` serves streamable HTTP on
127.0.0.1:PORT at ``/mcp``.
"""

import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("appo-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper() + "!"


@server.tool()
def fail(reason: str) -> str:
    """Always fails with a tool error."""
    from mcp.server.mcpserver.exceptions import ToolError

    raise ToolError(f"refused: {reason}")


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "woke up"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
    else:
        server.run()
