//! The node agent: runs the tasks assigned to this node and wires the overlay, the load
//! balancers and DNS from the dispatcher's stream.

pub mod executor;
