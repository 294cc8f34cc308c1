//! Pure planning: turns service and backend changes into an ordered list of
//! map operations, without touching the kernel. Each backend change costs a
//! constant number of operations (per unit of weight), whatever the number
//! of services.

mod ops;
mod slots;
mod table;

pub use ops::MapOp;
pub use slots::{rebalance, slot_counts, Rebalanced};
pub use table::{LbTable, Limits};
