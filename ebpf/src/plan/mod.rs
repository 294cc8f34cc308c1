//! Pure planning: turns service and backend changes into an ordered list of
//! map operations, without touching the kernel. Each backend change costs a
//! constant number of operations, whatever the number of services.

mod ops;
mod table;

pub use ops::MapOp;
pub use table::{LbTable, Limits};
