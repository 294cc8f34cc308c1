//! Not built yet: this crate is a placeholder for the CNI 1.1 plugin (`shoal-cni`) that will
//! attach containers of other runtimes (podman, containerd) to shoal overlays through the local
//! agent. It has no code and installs no binary; see the design brief's "Later" list.
