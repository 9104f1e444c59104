"""The process side: spawning, containing, streaming and ending child processes.

``spawn`` turns a request into an :class:`~service.process.spawn.ExecutionSpec`
and starts it; ``containment`` is the one interface over the two ways of
keeping a process tree together (``cgroup``: a cgroup v2 leaf per execution;
``pgroup``: a process group, the environment marker and the subreaper);
``ladder`` is the one kill ladder; ``execution`` and ``supervisor`` run it all.
"""
