//! CNI 1.1 plugin binary that attaches containers of other runtimes to shoal overlays through the local agent.
