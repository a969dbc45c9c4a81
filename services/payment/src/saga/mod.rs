//! The payment saga: the rules (pure, `rules`) and the driver that runs
//! each state's step against Stripe and the booking service and persists
//! where the rules lead (`driver`).

mod driver;
pub mod rules;

pub(crate) use driver::spawn_worker;
