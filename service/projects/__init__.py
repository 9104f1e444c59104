"""Projects and Claude Code agents: the registry, the agent command line,
stream-json parsing and the broadcast to a project's subscribers."""

from service.projects.registry import Projects

__all__ = ["Projects"]
